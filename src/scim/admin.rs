//! `rollcall directory …`: creating, listing, deleting SCIM directories and
//! rotating their tokens — the same code whether the server runs (through
//! its control socket) or not (on the database file directly).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::service;
use crate::model::{Directory, DirectoryId, ScimDirectory, ScimProvider};
use crate::store::{Store, StoreError, Tx};

/// One directory operation, as the control socket carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DirectoryOp {
    Create {
        organization_id: String,
        name: String,
        provider: String,
    },
    List,
    Delete {
        id: String,
    },
    RotateToken {
        id: String,
    },
}

/// The longest organization id or directory name accepted.
const MAX_TEXT: usize = 256;

fn text(what: &str, value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(format!("the {what} must not be empty"));
    }
    if v.len() > MAX_TEXT || v.chars().any(char::is_control) {
        return Err(format!(
            "the {what} must be at most {MAX_TEXT} bytes without control characters"
        ));
    }
    Ok(v.to_owned())
}

fn directory_id(id: &str) -> Result<DirectoryId, String> {
    DirectoryId::parse(id.trim()).map_err(|_| format!("{id:?} is not a directory id"))
}

/// A directory as `list` shows it (never its token, which is not kept).
fn describe(d: &Directory, s: &ScimDirectory) -> Value {
    json!({
        "id": d.id.to_string(),
        "organization_id": d.organization_id,
        "name": d.name,
        "type": d.kind(),
        "provider": s.provider.as_str(),
        "user_count": d.user_count,
        "group_count": d.group_count,
        "created_at": d.created_at.to_rfc3339(),
        "token_issued_at": s.token_issued_at.to_rfc3339(),
    })
}

/// A directory operation's write, run in one transaction: the answer as
/// JSON, or a refusal for the operator (which writes nothing).
pub type AdminWrite =
    Box<dyn FnMut(&mut Tx<'_>) -> Result<Result<Value, String>, StoreError> + Send>;

/// The write `op` needs (`None` for `list`, a read), its inputs checked
/// first: `create` and `rotate-token` answer the directory and its new
/// `token` (shown this once), `delete` `{"deleted": id}`.
///
/// # Errors
/// A refused request (unknown provider, an empty name, a malformed id).
pub fn write_of(op: &DirectoryOp) -> Result<Option<AdminWrite>, String> {
    Ok(Some(match op {
        DirectoryOp::Create {
            organization_id,
            name,
            provider,
        } => {
            let org = text("organization id", organization_id)?;
            let name = text("name", name)?;
            let provider = ScimProvider::parse(provider).ok_or_else(|| {
                format!(
                    "unknown provider {provider:?}; one of: {}",
                    ScimProvider::ALL.map(ScimProvider::as_str).join(", ")
                )
            })?;
            Box::new(move |tx| {
                let issued = service::create_directory(tx, &org, &name, provider)?;
                tracing::info!(directory = %issued.directory.id, organization = %org, "SCIM directory created");
                Ok(Ok(issued_json(&issued)))
            })
        }
        DirectoryOp::RotateToken { id } => {
            let dir = directory_id(id)?;
            Box::new(move |tx| {
                Ok(match service::rotate_token(tx, dir)? {
                    Some(issued) => {
                        tracing::info!(directory = %dir, "SCIM token rotated");
                        Ok(issued_json(&issued))
                    }
                    None => Err(format!("{dir} is not a SCIM directory")),
                })
            })
        }
        DirectoryOp::Delete { id } => {
            let dir = directory_id(id)?;
            Box::new(move |tx| {
                Ok(if service::delete_directory(tx, dir)? {
                    tracing::info!(directory = %dir, "SCIM directory deleted");
                    Ok(json!({ "deleted": dir.to_string() }))
                } else {
                    Err(format!(
                        "{dir} is not a SCIM directory (a WorkOS directory is deleted in WorkOS)"
                    ))
                })
            })
        }
        DirectoryOp::List => return Ok(None),
    }))
}

/// Every SCIM directory, as `list` answers them.
///
/// # Errors
/// A storage failure, as a message for the operator.
pub fn list(store: &Store) -> Result<Value, String> {
    let snap = store.snapshot().map_err(|e| e.to_string())?;
    let all = service::list_directories(&snap).map_err(|e| e.to_string())?;
    Ok(Value::Array(
        all.iter().map(|(d, s)| describe(d, s)).collect(),
    ))
}

/// Runs `op` on a database no server holds (`rollcall directory …`
/// offline); a running server runs [`write_of`] through its committer.
///
/// # Errors
/// A refused request or a storage failure, as a message for the operator.
pub fn run_offline(store: &Store, op: &DirectoryOp) -> Result<Value, String> {
    match write_of(op)? {
        Some(mut write) => store
            .write(|tx| write(tx))
            .map_err(|e: StoreError| e.to_string())?,
        None => list(store),
    }
}

fn issued_json(issued: &service::Issued) -> Value {
    json!({
        "id": issued.directory.id.to_string(),
        "organization_id": issued.directory.organization_id,
        "name": issued.directory.name,
        "type": issued.directory.kind(),
        "provider": issued.provider.as_str(),
        "token": issued.token,
    })
}
