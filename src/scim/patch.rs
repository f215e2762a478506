//! SCIM PATCH (RFC 7644 §3.5.2): parsing a PatchOp body and applying its
//! operations to a `serde_json::Value` resource, all or none.
//!
//! Accepted as the identity providers really send it: `Operations` in any
//! case, `op` in any case (Entra's `Add`/`Replace`/`Remove`), booleans as
//! strings (`"False"`) for `active` and `primary`, several operations in one
//! body, Entra's member removal by value array. Keys in the resource are
//! matched case-insensitively and keep their stored spelling.
//!
//! `remove` of a value that is not there is a no-op (idempotent retries);
//! `replace` through a value filter matching nothing is `noTarget`, as the
//! RFC says; `add` through an `eq` value filter matching nothing creates the
//! element (`emails[type eq "work"].value` on a user without a work email).

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::ScimType;
use super::filter::{
    self, AttrPath, CompareOp, Filter, Literal, PatchPath, get_ci, is_core_schema,
};

/// The PatchOp message schema a body's `schemas` must contain.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The Enterprise User extension schema.
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// The most operations accepted in one body.
pub const MAX_OPERATIONS: usize = 10_000;

/// Attributes whose string values `"true"`/`"false"` (any case) are coerced
/// to booleans.
const BOOLEAN_ATTRIBUTES: &[&str] = &["active", "primary"];

/// Why a PATCH was refused; nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{scim_type}: {message}")]
pub struct PatchError {
    /// The RFC 7644 `scimType`.
    pub scim_type: ScimType,
    /// What was wrong, for the SCIM Error `detail`.
    pub message: String,
}

impl PatchError {
    fn new(scim_type: ScimType, message: impl Into<String>) -> Self {
        PatchError {
            scim_type,
            message: message.into(),
        }
    }
}

/// A PATCH operation kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `add`.
    Add,
    /// `replace`.
    Replace,
    /// `remove`.
    Remove,
}

/// One operation of a PatchOp body.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    /// What to do.
    pub op: OpKind,
    /// Where; `None` means the resource itself (not allowed for `remove`).
    pub path: Option<PatchPath>,
    /// The value (required for `add` and `replace`).
    pub value: Option<Value>,
}

/// A parsed PatchOp body.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRequest {
    /// The operations, applied in order.
    pub operations: Vec<PatchOperation>,
}

/// The result of a successful PATCH.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOutcome {
    /// The resource with every operation applied.
    pub resource: Value,
    /// Member ids (`members[].value`) present after but not before.
    pub members_added: Vec<String>,
    /// Member ids present before but not after.
    pub members_removed: Vec<String>,
}

/// Parses a PatchOp body.
pub fn parse_request(body: &Value) -> Result<PatchRequest, PatchError> {
    if !body.is_object() {
        return Err(syntax("the body must be a JSON object"));
    }
    check_schemas(body)?;
    let ops = get_ci(body, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| syntax("\"Operations\" must be an array"))?;
    if ops.len() > MAX_OPERATIONS {
        return Err(syntax(format!("more than {MAX_OPERATIONS} operations")));
    }
    let operations = ops
        .iter()
        .enumerate()
        .map(|(i, op)| parse_operation(op).map_err(|e| prefix(e, i)))
        .collect::<Result<_, _>>()?;
    Ok(PatchRequest { operations })
}

fn syntax(message: impl Into<String>) -> PatchError {
    PatchError::new(ScimType::InvalidSyntax, message)
}

fn prefix(e: PatchError, index: usize) -> PatchError {
    PatchError::new(e.scim_type, format!("Operations[{index}]: {}", e.message))
}

fn check_schemas(body: &Value) -> Result<(), PatchError> {
    let ok = get_ci(body, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .any(|s| s.eq_ignore_ascii_case(PATCH_OP_SCHEMA))
        });
    if ok {
        Ok(())
    } else {
        Err(syntax(format!(
            "\"schemas\" must contain {PATCH_OP_SCHEMA:?}"
        )))
    }
}

fn parse_operation(op: &Value) -> Result<PatchOperation, PatchError> {
    if !op.is_object() {
        return Err(syntax("an operation must be an object"));
    }
    let kind = match get_ci(op, "op")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
    {
        Some(k) if k == "add" => OpKind::Add,
        Some(k) if k == "replace" => OpKind::Replace,
        Some(k) if k == "remove" => OpKind::Remove,
        _ => return Err(syntax("\"op\" must be \"add\", \"replace\" or \"remove\"")),
    };
    let path = match get_ci(op, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.trim().is_empty() => None,
        Some(Value::String(p)) => Some(
            filter::parse_path(p)
                .map_err(|e| PatchError::new(ScimType::InvalidPath, e.to_string()))?,
        ),
        Some(_) => {
            return Err(PatchError::new(
                ScimType::InvalidPath,
                "\"path\" must be a string",
            ));
        }
    };
    let value = get_ci(op, "value").cloned();
    if kind == OpKind::Remove && path.is_none() {
        return Err(PatchError::new(
            ScimType::NoTarget,
            "\"remove\" needs a \"path\"",
        ));
    }
    if kind != OpKind::Remove && value.is_none() {
        return Err(PatchError::new(
            ScimType::InvalidValue,
            "\"add\" and \"replace\" need a \"value\"",
        ));
    }
    Ok(PatchOperation {
        op: kind,
        path,
        value,
    })
}

/// Parses and applies a PatchOp body in one step.
pub fn patch(resource: &Value, body: &Value) -> Result<PatchOutcome, PatchError> {
    apply(resource, &parse_request(body)?)
}

/// Applies every operation to a copy of `resource`: the new resource, or an
/// error and nothing applied.
pub fn apply(resource: &Value, request: &PatchRequest) -> Result<PatchOutcome, PatchError> {
    let mut doc = match resource {
        Value::Object(map) => map.clone(),
        _ => {
            return Err(PatchError::new(
                ScimType::InvalidValue,
                "the resource is not an object",
            ));
        }
    };
    let before = member_ids(&doc);
    for (i, op) in request.operations.iter().enumerate() {
        let primaries = primaries(&doc);
        apply_operation(&mut doc, op).map_err(|e| prefix(e, i))?;
        keep_one_primary(&mut doc, &primaries);
    }
    let after = member_ids(&doc);
    Ok(PatchOutcome {
        members_added: difference(&after, &before),
        members_removed: difference(&before, &after),
        resource: Value::Object(doc),
    })
}

fn apply_operation(doc: &mut Map<String, Value>, op: &PatchOperation) -> Result<(), PatchError> {
    match &op.path {
        Some(path) => apply_path(doc, op.op, path, op.value.as_ref()),
        None if op.op == OpKind::Remove => Err(PatchError::new(
            ScimType::NoTarget,
            "\"remove\" needs a \"path\"",
        )),
        None => apply_without_path(doc, op.op, op.value.as_ref()),
    }
}

/// `add`/`replace` with no path: each key of the value object is a path (or
/// an extension schema whose object holds attributes).
fn apply_without_path(
    doc: &mut Map<String, Value>,
    kind: OpKind,
    value: Option<&Value>,
) -> Result<(), PatchError> {
    let Some(Value::Object(attrs)) = value else {
        return Err(PatchError::new(
            ScimType::InvalidValue,
            "without a \"path\", \"value\" must be an object",
        ));
    };
    for (key, v) in attrs {
        if is_extension_key(doc, key) {
            let Value::Object(ext) = v else {
                return Err(PatchError::new(
                    ScimType::InvalidValue,
                    format!("{key:?} must be an object"),
                ));
            };
            for (attr, v) in ext {
                let path = PatchPath {
                    schema: Some(key.clone()),
                    attr: attr.clone(),
                    filter: None,
                    sub: None,
                };
                apply_path(doc, kind, &path, Some(v))?;
            }
        } else {
            let path = filter::parse_path(key)
                .map_err(|e| PatchError::new(ScimType::InvalidPath, e.to_string()))?;
            apply_path(doc, kind, &path, Some(v))?;
        }
    }
    Ok(())
}

/// Whether a key of a no-path value names an extension schema object.
fn is_extension_key(doc: &Map<String, Value>, key: &str) -> bool {
    let urn = key.len() > 4 && key.is_char_boundary(4) && key[..4].eq_ignore_ascii_case("urn:");
    if !urn || is_core_schema(key) {
        return false;
    }
    let in_schemas = doc
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .any(|s| s.eq_ignore_ascii_case(key))
        });
    in_schemas || find_key(doc, key).is_some() || key.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA)
}

fn apply_path(
    doc: &mut Map<String, Value>,
    kind: OpKind,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<(), PatchError> {
    if read_only(doc, kind, path, value)? {
        return Ok(());
    }
    if let Some(urn) = whole_extension(doc, path) {
        return apply_extension(doc, kind, &urn, value);
    }
    let Some(container) = container(doc, path.schema.as_deref(), kind != OpKind::Remove)? else {
        return Ok(());
    };
    let name = path.sub.as_deref().unwrap_or(&path.attr);
    let value = value.map(|v| coerce(name, v.clone())).transpose()?;
    let value = value.map(|v| wrap_manager(path, v));
    match (&path.filter, &path.sub) {
        (None, None) => op_attr(container, kind, &path.attr, value),
        (None, Some(sub)) => op_sub(container, kind, &path.attr, sub, value),
        (Some(f), sub) => op_filtered(container, kind, path, f, sub.as_deref(), value),
    }
}

/// The extension URN when a path names a whole extension object (e.g.
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`), which the
/// path grammar reads as schema `…:2.0` and attribute `User`.
fn whole_extension(doc: &Map<String, Value>, path: &PatchPath) -> Option<String> {
    let schema = path.schema.as_deref()?;
    let urn = format!("{schema}:{}", path.attr);
    let whole = path.filter.is_none() && path.sub.is_none() && is_extension_key(doc, &urn);
    whole.then_some(urn)
}

/// An operation on a whole extension object: `add`/`replace` its
/// attributes as a no-path operation would; `remove` drops it and its
/// `schemas` entry.
fn apply_extension(
    doc: &mut Map<String, Value>,
    kind: OpKind,
    urn: &str,
    value: Option<&Value>,
) -> Result<(), PatchError> {
    if kind != OpKind::Remove {
        let mut wrapped = Map::new();
        wrapped.insert(urn.to_string(), value.cloned().unwrap_or(Value::Null));
        return apply_without_path(doc, kind, Some(&Value::Object(wrapped)));
    }
    remove(doc, urn);
    if let Some(Value::Array(schemas)) = doc.get_mut("schemas") {
        schemas.retain(|s| !s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(urn)));
    }
    Ok(())
}

/// Entra sends the enterprise `manager` as a bare id string; the schema
/// makes it complex: `{"value": id}`.
fn wrap_manager(path: &PatchPath, value: Value) -> Value {
    let is_manager = path.attr.eq_ignore_ascii_case("manager")
        && path.filter.is_none()
        && path.sub.is_none()
        && path
            .schema
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA));
    match value {
        Value::String(id) if is_manager => {
            let mut m = Map::new();
            m.insert("value".to_string(), Value::String(id));
            Value::Object(m)
        }
        v => v,
    }
}

/// `id` and `meta` are read-only: an error, unless an `add`/`replace` sets
/// the value already there (clients echo `id`), which is skipped (`true`).
fn read_only(
    doc: &Map<String, Value>,
    kind: OpKind,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<bool, PatchError> {
    let core = path.schema.as_deref().is_none_or(is_core_schema);
    let attr = &path.attr;
    if !core || !(attr.eq_ignore_ascii_case("id") || attr.eq_ignore_ascii_case("meta")) {
        return Ok(false);
    }
    let unchanged = kind != OpKind::Remove
        && path.filter.is_none()
        && path.sub.is_none()
        && value.is_some()
        && find_key(doc, attr).and_then(|k| doc.get(&k)) == value;
    if unchanged {
        Ok(true)
    } else {
        Err(PatchError::new(
            ScimType::Mutability,
            format!("{attr:?} is read-only"),
        ))
    }
}

/// The object a path's attribute lives in: the resource, or an extension
/// object (created, and added to `schemas`, when `create`).
fn container<'a>(
    doc: &'a mut Map<String, Value>,
    schema: Option<&str>,
    create: bool,
) -> Result<Option<&'a mut Map<String, Value>>, PatchError> {
    let Some(schema) = schema.filter(|s| !is_core_schema(s)) else {
        return Ok(Some(doc));
    };
    let key = match find_key(doc, schema) {
        Some(k) => k,
        None if create => {
            add_schema(doc, schema);
            doc.insert(schema.to_string(), Value::Object(Map::new()));
            schema.to_string()
        }
        None => return Ok(None),
    };
    match doc.get_mut(&key) {
        Some(Value::Object(ext)) => Ok(Some(ext)),
        _ => Err(PatchError::new(
            ScimType::InvalidPath,
            format!("{schema:?} is not an extension object"),
        )),
    }
}

fn add_schema(doc: &mut Map<String, Value>, schema: &str) {
    if let Some(Value::Array(schemas)) = doc.get_mut("schemas") {
        let known = schemas
            .iter()
            .filter_map(Value::as_str)
            .any(|s| s.eq_ignore_ascii_case(schema));
        if !known {
            schemas.push(Value::String(schema.to_string()));
        }
    }
}

/// The stored spelling of `name` in `map`, matched case-insensitively.
fn find_key(map: &Map<String, Value>, name: &str) -> Option<String> {
    if map.contains_key(name) {
        return Some(name.to_string());
    }
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

/// Sets `name` to `value`, keeping the stored key's spelling.
fn set(map: &mut Map<String, Value>, name: &str, value: Value) {
    let key = find_key(map, name).unwrap_or_else(|| name.to_string());
    map.insert(key, value);
}

/// An operation on a whole attribute (`attr`, or `sub` inside an element).
fn op_attr(
    map: &mut Map<String, Value>,
    kind: OpKind,
    name: &str,
    value: Option<Value>,
) -> Result<(), PatchError> {
    let existing = find_key(map, name).and_then(|k| map.get_mut(&k));
    match (kind, existing, value) {
        (OpKind::Remove, None, _) => {}
        (OpKind::Remove, Some(Value::Array(items)), Some(named)) if !named.is_null() => {
            let named = match named {
                Value::Array(named) => named,
                one => vec![one],
            };
            remove_named(items, &named);
            if items.is_empty() {
                remove(map, name);
            }
        }
        (OpKind::Remove, Some(_), _) => remove(map, name),
        (_, _, None) => return Err(PatchError::new(ScimType::InvalidValue, "missing \"value\"")),
        (OpKind::Add, Some(Value::Array(items)), Some(v)) => append(items, v, name),
        (_, Some(Value::Object(obj)), Some(Value::Object(v))) => merge(obj, v, kind),
        (OpKind::Add, None, Some(Value::Array(v))) => {
            let mut items = Vec::new();
            append(&mut items, Value::Array(v), name);
            set(map, name, Value::Array(items));
        }
        (_, _, Some(v)) => set(map, name, v),
    }
    Ok(())
}

fn remove(map: &mut Map<String, Value>, name: &str) {
    if let Some(k) = find_key(map, name) {
        map.shift_remove(&k);
    }
}

/// Appends values to a multi-valued attribute, skipping ones already there
/// (for `members`, by `value`).
fn append(items: &mut Vec<Value>, value: Value, name: &str) {
    let new = match value {
        Value::Array(v) => v,
        v => vec![v],
    };
    let members = name.eq_ignore_ascii_case("members");
    let mut seen: HashSet<String> = items.iter().map(|e| element_key(e, members)).collect();
    for v in new {
        if seen.insert(element_key(&v, members)) {
            items.push(v);
        }
    }
}

/// A key identifying an element, for set lookups in big groups: its
/// `value` when `by_value` and it has one (case-insensitively: a member's
/// or an email's `value` is not case-exact, RFC 7643 §8.7), else its JSON
/// text.
fn element_key(e: &Value, by_value: bool) -> String {
    match get_ci(e, "value").filter(|_| by_value) {
        Some(Value::String(v)) => format!("v:{}", Value::String(v.to_lowercase())),
        Some(v) => format!("v:{v}"),
        None => format!("j:{e}"),
    }
}

/// Removes the elements named by `named` (by `value` when a named item has
/// one, else by equality), in one pass.
fn remove_named(items: &mut Vec<Value>, named: &[Value]) {
    let keys: HashSet<String> = named.iter().map(|n| element_key(n, true)).collect();
    items.retain(|e| {
        let by_value = get_ci(e, "value").is_some() && keys.contains(&element_key(e, true));
        !by_value && !keys.contains(&element_key(e, false))
    });
}

/// Merges sub-attributes into a complex value: objects recursively,
/// multi-valued ones appended on `add`, the rest replaced.
fn merge(target: &mut Map<String, Value>, src: Map<String, Value>, kind: OpKind) {
    for (k, v) in src {
        let existing = find_key(target, &k).and_then(|key| target.get_mut(&key));
        match (existing, v) {
            (Some(Value::Object(t)), Value::Object(s)) => merge(t, s, kind),
            (Some(Value::Array(items)), v) if kind == OpKind::Add => append(items, v, &k),
            (_, v) => set(target, &k, v),
        }
    }
}

/// An operation on `attr.sub`.
fn op_sub(
    map: &mut Map<String, Value>,
    kind: OpKind,
    attr: &str,
    sub: &str,
    value: Option<Value>,
) -> Result<(), PatchError> {
    match find_key(map, attr).and_then(|k| map.get_mut(&k)) {
        None if kind == OpKind::Remove => Ok(()),
        None => {
            let mut obj = Map::new();
            op_attr(&mut obj, kind, sub, value)?;
            set(map, attr, Value::Object(obj));
            Ok(())
        }
        Some(Value::Object(obj)) => op_attr(obj, kind, sub, value),
        Some(Value::Array(items)) => {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                op_attr(item, kind, sub, value.clone())?;
            }
            Ok(())
        }
        Some(_) => Err(PatchError::new(
            ScimType::InvalidPath,
            format!("{attr:?} has no sub-attributes"),
        )),
    }
}

/// An operation through a value filter: `attr[filter]` or `attr[filter].sub`.
fn op_filtered(
    map: &mut Map<String, Value>,
    kind: OpKind,
    path: &PatchPath,
    f: &Filter,
    sub: Option<&str>,
    value: Option<Value>,
) -> Result<(), PatchError> {
    let parent = AttrPath::simple(&path.attr);
    let items = match find_key(map, &path.attr).and_then(|k| map.get_mut(&k)) {
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(PatchError::new(
                ScimType::InvalidPath,
                format!("{:?} is not multi-valued", path.attr),
            ));
        }
        None if kind == OpKind::Remove => return Ok(()),
        None => {
            set(map, &path.attr, Value::Array(Vec::new()));
            match find_key(map, &path.attr).and_then(|k| map.get_mut(&k)) {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(PatchError::new(
                        ScimType::InvalidPath,
                        "cannot create the attribute",
                    ));
                }
            }
        }
    };
    let hits: Vec<usize> = (0..items.len())
        .filter(|&i| f.matches_element(&items[i], &parent))
        .collect();
    let result = match kind {
        OpKind::Remove => {
            remove_matched(items, &hits, sub);
            Ok(())
        }
        _ if hits.is_empty() => add_seeded(items, kind, f, sub, value, path),
        _ => update_matched(items, &hits, kind, sub, value),
    };
    if matches!(map.get(&find_key(map, &path.attr).unwrap_or_default()), Some(Value::Array(a)) if a.is_empty())
    {
        remove(map, &path.attr);
    }
    result
}

fn remove_matched(items: &mut Vec<Value>, hits: &[usize], sub: Option<&str>) {
    match sub {
        None => {
            let mut hit = vec![false; items.len()];
            for &i in hits {
                if let Some(h) = hit.get_mut(i) {
                    *h = true;
                }
            }
            let mut i = 0;
            items.retain(|_| {
                let keep = !hit.get(i).copied().unwrap_or(false);
                i += 1;
                keep
            });
        }
        Some(sub) => {
            for &i in hits {
                if let Some(obj) = items.get_mut(i).and_then(Value::as_object_mut) {
                    remove(obj, sub);
                }
            }
        }
    }
}

fn update_matched(
    items: &mut [Value],
    hits: &[usize],
    kind: OpKind,
    sub: Option<&str>,
    value: Option<Value>,
) -> Result<(), PatchError> {
    for &i in hits {
        let Some(item) = items.get_mut(i) else {
            continue;
        };
        match (sub, &value, kind) {
            (Some(sub), _, _) => {
                let obj = item.as_object_mut().ok_or_else(|| {
                    PatchError::new(
                        ScimType::InvalidPath,
                        "the matched value has no sub-attributes",
                    )
                })?;
                op_attr(obj, OpKind::Replace, sub, value.clone())?;
            }
            (None, Some(Value::Object(v)), OpKind::Add) => match item.as_object_mut() {
                Some(obj) => merge(obj, v.clone(), OpKind::Add),
                None => *item = Value::Object(v.clone()),
            },
            (None, Some(v), _) => *item = v.clone(),
            (None, None, _) => {
                return Err(PatchError::new(ScimType::InvalidValue, "missing \"value\""));
            }
        }
    }
    Ok(())
}

/// `add` through a filter that matched nothing: a new element built from the
/// filter's `eq` terms (e.g. `type eq "work"`) and the value. Anything else
/// is `noTarget`.
fn add_seeded(
    items: &mut Vec<Value>,
    kind: OpKind,
    f: &Filter,
    sub: Option<&str>,
    value: Option<Value>,
    path: &PatchPath,
) -> Result<(), PatchError> {
    let no_target = || PatchError::new(ScimType::NoTarget, format!("no value matches {path}"));
    if kind != OpKind::Add {
        return Err(no_target());
    }
    let mut element = Map::new();
    seed(f, &mut element).ok_or_else(no_target)?;
    match (sub, value) {
        (Some(sub), Some(v)) => set(&mut element, sub, v),
        (None, Some(Value::Object(v))) => merge(&mut element, v, OpKind::Add),
        _ => {
            return Err(PatchError::new(
                ScimType::InvalidValue,
                format!("cannot add this value at {path}"),
            ));
        }
    }
    items.push(Value::Object(element));
    Ok(())
}

/// Fills `element` from a conjunction of `attr eq literal` terms.
fn seed(f: &Filter, element: &mut Map<String, Value>) -> Option<()> {
    match f {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value,
        } if path.schema.is_none() && path.sub.is_none() => {
            let v = match value {
                Literal::String(s) => Value::String(s.clone()),
                Literal::Number(n) => Value::Number(n.clone()),
                Literal::Bool(b) => Value::Bool(*b),
                Literal::Null => return None,
            };
            set(element, &path.attr, v);
            Some(())
        }
        Filter::And(terms) => terms.iter().try_for_each(|t| seed(t, element)),
        _ => None,
    }
}

/// Coerces `"true"`/`"false"` strings (any case) to booleans for the known
/// boolean attributes, at any depth of the value.
fn coerce(name: &str, value: Value) -> Result<Value, PatchError> {
    match value {
        Value::String(s) if is_boolean_attr(name) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(PatchError::new(
                ScimType::InvalidValue,
                format!("{name:?} must be a boolean, got {s:?}"),
            )),
        },
        Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| coerce(&k, v).map(|v| (k, v)))
            .collect::<Result<Map<_, _>, _>>()
            .map(Value::Object),
        Value::Array(items) => items
            .into_iter()
            .map(|v| coerce(name, v))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        v => Ok(v),
    }
}

fn is_boolean_attr(name: &str) -> bool {
    BOOLEAN_ATTRIBUTES
        .iter()
        .any(|b| b.eq_ignore_ascii_case(name))
}

fn is_primary(e: &Value) -> bool {
    match get_ci(e, "primary") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The multi-valued attributes' elements marked `primary` (as JSON text),
/// by attribute; `members` has no `primary` and is not looked at.
fn primaries(doc: &Map<String, Value>) -> Vec<(String, HashSet<String>)> {
    doc.iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("members"))
        .filter_map(|(k, v)| {
            let marked: HashSet<String> = v
                .as_array()?
                .iter()
                .filter(|e| is_primary(e))
                .map(Value::to_string)
                .collect();
            Some((k.clone(), marked))
        })
        .collect()
}

/// An operation that marks a value `primary` unmarks the others of its
/// attribute (RFC 7644 §3.5.2): of several primaries, the last one the
/// operation marked (one not marked so before it) stays.
fn keep_one_primary(doc: &mut Map<String, Value>, before: &[(String, HashSet<String>)]) {
    let none = HashSet::new();
    for (key, value) in doc.iter_mut() {
        if key.eq_ignore_ascii_case("members") {
            continue;
        }
        let Value::Array(items) = value else { continue };
        let marked: Vec<usize> = (0..items.len())
            .filter(|&i| is_primary(&items[i]))
            .collect();
        if marked.len() < 2 {
            continue;
        }
        let old = before
            .iter()
            .find(|(k, _)| k == key)
            .map_or(&none, |(_, m)| m);
        let Some(&keep) = marked
            .iter()
            .rev()
            .find(|&&i| !old.contains(&items[i].to_string()))
        else {
            continue;
        };
        for i in marked.into_iter().filter(|&i| i != keep) {
            if let Value::Object(e) = &mut items[i]
                && let Some(k) = e
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case("primary"))
                    .cloned()
            {
                e.insert(k, Value::Bool(false));
            }
        }
    }
}

/// The `value` of each element of `members`, in order.
fn member_ids(doc: &Map<String, Value>) -> Vec<String> {
    find_key(doc, "members")
        .and_then(|k| doc.get(&k))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|m| get_ci(m, "value").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The ids of `a` not in `b`, in `a`'s order, without duplicates.
fn difference(a: &[String], b: &[String]) -> Vec<String> {
    let b: HashSet<&str> = b.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    a.iter()
        .filter(|id| !b.contains(id.as_str()) && seen.insert(id.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn body(ops: Value) -> Value {
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops})
    }

    fn run(resource: &Value, ops: Value) -> Result<PatchOutcome, PatchError> {
        patch(resource, &body(ops))
    }

    fn ok(resource: &Value, ops: Value) -> PatchOutcome {
        match run(resource, ops) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    }

    fn err(resource: &Value, ops: Value) -> ScimType {
        match run(resource, ops) {
            Ok(o) => panic!("expected an error, got {}", o.resource),
            Err(e) => e.scim_type,
        }
    }

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "u-1",
            "userName": "bjensen@example.com",
            "active": true,
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "meta": {"resourceType": "User", "version": "W/\"1\""}
        })
    }

    fn group(members: &[&str]) -> Value {
        let members: Vec<Value> = members
            .iter()
            .map(|m| json!({"value": m, "display": m}))
            .collect();
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "g-1",
            "displayName": "Admins",
            "members": members
        })
    }

    fn member_values(v: &Value) -> Vec<&str> {
        v["members"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["value"].as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn body_shape_is_checked() {
        let ops = json!([{"op": "replace", "path": "active", "value": false}]);
        let no_schema = json!({"schemas": ["urn:x"], "Operations": ops});
        assert_eq!(
            parse_request(&no_schema).unwrap_err().scim_type,
            ScimType::InvalidSyntax
        );
        assert_eq!(
            parse_request(&json!([])).unwrap_err().scim_type,
            ScimType::InvalidSyntax
        );
        let no_ops = json!({"schemas": [PATCH_OP_SCHEMA]});
        assert_eq!(
            parse_request(&no_ops).unwrap_err().scim_type,
            ScimType::InvalidSyntax
        );
        // Entra: lower-case `operations`, PascalCase ops.
        let entra = json!({"schemas": [PATCH_OP_SCHEMA], "operations": [{"op": "Replace", "path": "active", "value": "False"}]});
        let req = parse_request(&entra).unwrap();
        assert_eq!(req.operations[0].op, OpKind::Replace);
        let bad_op = body(json!([{"op": "move", "path": "a", "value": 1}]));
        assert_eq!(
            parse_request(&bad_op).unwrap_err().scim_type,
            ScimType::InvalidSyntax
        );
        let bad_path = body(json!([{"op": "add", "path": "emails[type eq]", "value": 1}]));
        assert_eq!(
            parse_request(&bad_path).unwrap_err().scim_type,
            ScimType::InvalidPath
        );
        let no_value = body(json!([{"op": "add", "path": "title"}]));
        assert_eq!(
            parse_request(&no_value).unwrap_err().scim_type,
            ScimType::InvalidValue
        );
    }

    #[test]
    fn okta_deactivation_without_path() {
        let out = ok(
            &user(),
            json!([{"op": "replace", "value": {"active": false}}]),
        );
        assert_eq!(out.resource["active"], json!(false));
        assert_eq!(out.resource["userName"], json!("bjensen@example.com"));
    }

    #[test]
    fn entra_boolean_strings_any_case() {
        for (s, b) in [("False", false), ("TRUE", true), ("false", false)] {
            let out = ok(
                &user(),
                json!([{"op": "Replace", "path": "active", "value": s}]),
            );
            assert_eq!(out.resource["active"], json!(b));
        }
        let out = ok(
            &user(),
            json!([{"op": "Replace", "value": {"active": "False"}}]),
        );
        assert_eq!(out.resource["active"], json!(false));
        let out = ok(
            &user(),
            json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": "True"}]),
        );
        assert_eq!(out.resource["emails"][1]["primary"], json!(true));
        assert_eq!(
            err(
                &user(),
                json!([{"op": "replace", "path": "active", "value": "yes"}])
            ),
            ScimType::InvalidValue
        );
        // Not a boolean attribute: left a string.
        let out = ok(
            &user(),
            json!([{"op": "replace", "path": "title", "value": "True"}]),
        );
        assert_eq!(out.resource["title"], json!("True"));
    }

    #[test]
    fn entra_multi_op_body_is_applied_in_order() {
        let out = ok(
            &user(),
            json!([
                {"op": "Replace", "path": "displayName", "value": "Babs"},
                {"op": "Add", "path": "title", "value": "CEO"},
                {"op": "Replace", "path": "name.familyName", "value": "Smith"},
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "babs@example.com"},
                {"op": "Remove", "path": "title"}
            ]),
        );
        let r = &out.resource;
        assert_eq!(r["displayName"], json!("Babs"));
        assert!(r.get("title").is_none());
        assert_eq!(
            r["name"],
            json!({"givenName": "Barbara", "familyName": "Smith"})
        );
        assert_eq!(r["emails"][0]["value"], json!("babs@example.com"));
        assert_eq!(r["emails"][1]["value"], json!("babs@jensen.org"));
    }

    #[test]
    fn atomic_all_or_nothing() {
        let original = user();
        let e = run(
            &original,
            json!([
                {"op": "replace", "path": "active", "value": false},
                {"op": "replace", "path": "emails[type eq \"other\"].value", "value": "x"}
            ]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, ScimType::NoTarget);
        assert!(e.message.starts_with("Operations[1]"), "{}", e.message);
        assert_eq!(original, user());
    }

    #[test]
    fn keys_match_case_insensitively_keeping_stored_spelling() {
        let out = ok(
            &user(),
            json!([{"op": "replace", "path": "USERNAME", "value": "b@x"}]),
        );
        assert_eq!(out.resource["userName"], json!("b@x"));
        assert!(out.resource.get("USERNAME").is_none());
        let out = ok(
            &user(),
            json!([{"op": "replace", "value": {"NAME": {"GIVENNAME": "Bab"}}}]),
        );
        assert_eq!(out.resource["name"]["givenName"], json!("Bab"));
        assert_eq!(out.resource["name"]["familyName"], json!("Jensen"));
    }

    #[test]
    fn add_without_path_merges() {
        let out = ok(
            &user(),
            json!([{"op": "add", "value": {
                "nickName": "Babs",
                "name": {"middleName": "J"},
                "emails": [{"value": "b@third.org", "type": "other"}]
            }}]),
        );
        let r = &out.resource;
        assert_eq!(r["nickName"], json!("Babs"));
        assert_eq!(r["name"]["middleName"], json!("J"));
        assert_eq!(r["name"]["givenName"], json!("Barbara"));
        assert_eq!(r["emails"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn replace_without_path_replaces_given_attributes() {
        let out = ok(
            &user(),
            json!([{"op": "replace", "value": {"emails": [{"value": "only@x", "type": "work"}]}}]),
        );
        assert_eq!(
            out.resource["emails"],
            json!([{"value": "only@x", "type": "work"}])
        );
        assert_eq!(out.resource["active"], json!(true));
    }

    #[test]
    fn extension_attributes() {
        let manager = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";
        let out = ok(
            &user(),
            json!([{"op": "Add", "path": manager, "value": {"value": "m-1"}}]),
        );
        let ext = &out.resource[ENTERPRISE_USER_SCHEMA];
        assert_eq!(ext["manager"], json!({"value": "m-1"}));
        assert!(
            out.resource["schemas"]
                .as_array()
                .is_some_and(|s| s.contains(&json!(ENTERPRISE_USER_SCHEMA)))
        );
        // Entra: the manager as a bare id.
        let entra = ok(
            &user(),
            json!([{"op": "Add", "path": manager, "value": "m-2"}]),
        );
        assert_eq!(
            entra.resource[ENTERPRISE_USER_SCHEMA]["manager"],
            json!({"value": "m-2"})
        );
        let out2 = ok(&out.resource, json!([{"op": "Remove", "path": manager}]));
        assert!(
            out2.resource[ENTERPRISE_USER_SCHEMA]
                .get("manager")
                .is_none()
        );
        // No path, Okta-style: the extension as an object key.
        let out = ok(
            &user(),
            json!([{"op": "replace", "value": {ENTERPRISE_USER_SCHEMA: {"department": "R&D"}}}]),
        );
        assert_eq!(
            out.resource[ENTERPRISE_USER_SCHEMA]["department"],
            json!("R&D")
        );
        // The whole extension as the path.
        let out = ok(
            &user(),
            json!([{"op": "add", "path": ENTERPRISE_USER_SCHEMA, "value": {"costCenter": "4130"}}]),
        );
        assert_eq!(
            out.resource[ENTERPRISE_USER_SCHEMA],
            json!({"costCenter": "4130"})
        );
        let out = ok(
            &out.resource,
            json!([{"op": "remove", "path": ENTERPRISE_USER_SCHEMA}]),
        );
        assert!(out.resource.get(ENTERPRISE_USER_SCHEMA).is_none());
        assert_eq!(
            out.resource["schemas"],
            json!(["urn:ietf:params:scim:schemas:core:2.0:User"])
        );
        // A core-schema prefix addresses the top level.
        let out = ok(
            &user(),
            json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:displayName", "value": "B"}]),
        );
        assert_eq!(out.resource["displayName"], json!("B"));
        // No path with a fully qualified attribute as key.
        let out = ok(
            &user(),
            json!([{"op": "replace", "value": {
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "42"
            }}]),
        );
        assert_eq!(
            out.resource[ENTERPRISE_USER_SCHEMA]["employeeNumber"],
            json!("42")
        );
    }

    #[test]
    fn value_filtered_paths() {
        let out = ok(
            &user(),
            json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
        );
        assert_eq!(out.resource["emails"].as_array().map(Vec::len), Some(1));
        assert_eq!(out.resource["emails"][0]["type"], json!("work"));
        let out = ok(
            &user(),
            json!([{"op": "remove", "path": "emails[type eq \"work\"].primary"}]),
        );
        assert!(out.resource["emails"][0].get("primary").is_none());
        let out = ok(
            &user(),
            json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {"value": "n@x", "type": "home"}}]),
        );
        assert_eq!(
            out.resource["emails"][1],
            json!({"value": "n@x", "type": "home"})
        );
        // Removing the only matching values leaves the rest; removing all unassigns.
        let out = ok(
            &user(),
            json!([{"op": "remove", "path": "emails[value co \"@\"]"}]),
        );
        assert!(out.resource.get("emails").is_none());
        // A remove matching nothing is a no-op.
        let out = ok(
            &user(),
            json!([{"op": "remove", "path": "emails[type eq \"other\"]"}]),
        );
        assert_eq!(out.resource, user());
    }

    #[test]
    fn add_through_eq_filter_creates_the_element() {
        let mut u = user();
        if let Some(o) = u.as_object_mut() {
            o.shift_remove("emails");
        }
        let out = ok(
            &u,
            json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "w@x"}]),
        );
        assert_eq!(
            out.resource["emails"],
            json!([{"type": "work", "value": "w@x"}])
        );
        assert_eq!(
            err(
                &u,
                json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "w@x"}])
            ),
            ScimType::NoTarget
        );
        assert_eq!(
            err(
                &user(),
                json!([{"op": "add", "path": "emails[type co \"zz\" or display pr].value", "value": "x"}])
            ),
            ScimType::NoTarget
        );
    }

    #[test]
    fn read_only_attributes() {
        assert_eq!(
            err(
                &user(),
                json!([{"op": "replace", "path": "id", "value": "other"}])
            ),
            ScimType::Mutability
        );
        assert_eq!(
            err(&user(), json!([{"op": "remove", "path": "meta"}])),
            ScimType::Mutability
        );
        assert_eq!(
            err(
                &user(),
                json!([{"op": "replace", "path": "meta.version", "value": "x"}])
            ),
            ScimType::Mutability
        );
        assert_eq!(
            err(
                &user(),
                json!([{"op": "replace", "value": {"id": "other"}}])
            ),
            ScimType::Mutability
        );
        // Echoing the current id (some clients send the whole resource) is fine.
        let out = ok(
            &user(),
            json!([{"op": "replace", "value": {"id": "u-1", "active": false}}]),
        );
        assert_eq!(out.resource["active"], json!(false));
    }

    #[test]
    fn remove_without_path_is_no_target() {
        let e =
            parse_request(&body(json!([{"op": "Remove", "value": {"active": true}}]))).unwrap_err();
        assert_eq!(e.scim_type, ScimType::NoTarget);
    }

    #[test]
    fn entra_add_members_appends_without_duplicates() {
        let out = ok(
            &group(&["u0"]),
            json!([{"op": "Add", "path": "members", "value": [{"value": "u1"}, {"value": "u0"}, {"value": "u1"}]}]),
        );
        assert_eq!(member_values(&out.resource), ["u0", "u1"]);
        assert_eq!(out.members_added, ["u1"]);
        assert!(out.members_removed.is_empty());
        // Onto a group with no members yet.
        let mut empty = group(&[]);
        if let Some(o) = empty.as_object_mut() {
            o.shift_remove("members");
        }
        let out = ok(
            &empty,
            json!([{"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u1"}]}]),
        );
        assert_eq!(member_values(&out.resource), ["u1"]);
        assert_eq!(out.members_added, ["u1"]);
    }

    #[test]
    fn okta_and_entra_remove_by_filter_removes_only_that_member() {
        let out = ok(
            &group(&["u1", "u2", "u3"]),
            json!([{"op": "Remove", "path": "members[value eq \"u1\"]"}]),
        );
        assert_eq!(member_values(&out.resource), ["u2", "u3"]);
        assert_eq!(out.members_removed, ["u1"]);
        assert!(out.members_added.is_empty());
        // Absent member: nothing removed, nothing else touched.
        let out = ok(
            &group(&["u2"]),
            json!([{"op": "remove", "path": "members[value eq \"u9\"]"}]),
        );
        assert_eq!(member_values(&out.resource), ["u2"]);
        assert!(out.members_removed.is_empty());
    }

    #[test]
    fn entra_remove_members_by_value_array_removes_only_those() {
        let out = ok(
            &group(&["u1", "u2", "u3"]),
            json!([{"op": "Remove", "path": "members", "value": [{"value": "u1"}, {"value": "u3"}, {"value": "u9"}]}]),
        );
        assert_eq!(member_values(&out.resource), ["u2"]);
        assert_eq!(out.members_removed, ["u1", "u3"]);
        // A single object rather than an array names one member too.
        let out = ok(
            &group(&["u1", "u2"]),
            json!([{"op": "Remove", "path": "members", "value": {"value": "u2"}}]),
        );
        assert_eq!(member_values(&out.resource), ["u1"]);
        // Without a value the whole attribute goes.
        let out = ok(
            &group(&["u1", "u2"]),
            json!([{"op": "remove", "path": "members"}]),
        );
        assert!(out.resource.get("members").is_none());
        assert_eq!(out.members_removed, ["u1", "u2"]);
    }

    #[test]
    fn replace_members_reports_both_sides() {
        let out = ok(
            &group(&["u1", "u2"]),
            json!([{"op": "replace", "path": "members", "value": [{"value": "u2"}, {"value": "u3"}]}]),
        );
        assert_eq!(member_values(&out.resource), ["u2", "u3"]);
        assert_eq!(out.members_added, ["u3"]);
        assert_eq!(out.members_removed, ["u1"]);
    }

    #[test]
    fn big_group_membership_changes_touch_only_the_named() {
        let ids: Vec<String> = (0..50_000).map(|i| format!("u{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let g = group(&refs);
        let add: Vec<Value> = (50_000..52_000)
            .map(|i| json!({"value": format!("u{i}")}))
            .collect();
        let del: Vec<Value> = (0..2_000)
            .map(|i| json!({"value": format!("u{}", i * 2)}))
            .collect();
        let started = std::time::Instant::now();
        let out = ok(
            &g,
            json!([
                {"op": "Add", "path": "members", "value": add},
                {"op": "Remove", "path": "members", "value": del}
            ]),
        );
        eprintln!(
            "50k-member group, 2k adds + 2k removes: {:?}",
            started.elapsed()
        );
        assert_eq!(out.members_added.len(), 2_000);
        assert_eq!(out.members_removed.len(), 2_000);
        assert_eq!(member_values(&out.resource).len(), 50_000);
        assert_eq!(out.members_removed[1], "u2");
    }

    #[test]
    fn multi_op_group_patch() {
        let out = ok(
            &group(&["u1", "u2"]),
            json!([
                {"op": "Replace", "path": "displayName", "value": "Ops"},
                {"op": "Add", "path": "members", "value": [{"value": "u3"}]},
                {"op": "Remove", "path": "members", "value": [{"value": "u1"}]},
                {"op": "Remove", "path": "members[value eq \"u3\"]"},
                {"op": "Add", "path": "members", "value": [{"value": "u4"}]}
            ]),
        );
        assert_eq!(out.resource["displayName"], json!("Ops"));
        assert_eq!(member_values(&out.resource), ["u2", "u4"]);
        assert_eq!(out.members_added, ["u4"]);
        assert_eq!(out.members_removed, ["u1"]);
    }

    #[test]
    fn errors_name_their_scim_type() {
        assert_eq!(
            err(
                &user(),
                json!([{"op": "add", "path": "userName.x[type pr]", "value": 1}])
            ),
            ScimType::InvalidPath
        );
        assert_eq!(
            err(
                &user(),
                json!([{"op": "replace", "path": "userName[type pr]", "value": 1}])
            ),
            ScimType::InvalidPath
        );
        assert_eq!(
            err(&user(), json!([{"op": "add", "value": "not an object"}])),
            ScimType::InvalidValue
        );
        assert_eq!(
            err(
                &user(),
                json!([{"op": "add", "path": "userName.first", "value": "x"}])
            ),
            ScimType::InvalidPath
        );
        assert_eq!(ScimType::NoTarget.to_string(), "noTarget");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn patch_never_panics(
            op in prop_oneof![Just("add"), Just("Replace"), Just("REMOVE")],
            path in proptest::option::of(prop_oneof![
                any::<String>(),
                Just("members[value eq \"u1\"]".to_string()),
                Just("emails[type eq \"work\"].value".to_string()),
                "[a-z]{1,6}(\\.[a-z]{1,6})?",
            ]),
            value in proptest::option::of(prop_oneof![
                any::<String>().prop_map(Value::String),
                Just(json!([{"value": "u1"}])),
                Just(json!({"active": "False", "name": {"givenName": 1}})),
                Just(json!(true)),
            ]),
        ) {
            let mut o = serde_json::Map::new();
            o.insert("op".into(), json!(op));
            if let Some(p) = path { o.insert("path".into(), json!(p)); }
            if let Some(v) = value { o.insert("value".into(), v); }
            let _ = patch(&group(&["u1", "u2"]), &body(json!([o])));
            let _ = patch(&user(), &body(json!([o])));
        }
    }
}
