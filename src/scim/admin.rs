//! `rollcall directory …`: creating, listing, deleting SCIM directories and
//! rotating their tokens — the same code whether the server runs (through
//! its control socket) or not (on the database file directly).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::service;
use crate::model::{Directory, DirectoryId, ScimDirectory, ScimProvider};
use crate::store::Store;

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

/// Runs `op` on `store` and answers it as JSON: `create` and
/// `rotate-token` give the directory and its new `token` (shown this once),
/// `list` an array, `delete` `{"deleted": id}`.
///
/// # Errors
/// A refused request (unknown provider, not a SCIM directory …) or a
/// storage failure, as a message for the operator.
pub fn run(store: &Store, op: &DirectoryOp) -> Result<Value, String> {
    match op {
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
            let issued = store
                .write(|tx| service::create_directory(tx, &org, &name, provider))
                .map_err(|e| e.to_string())?;
            tracing::info!(directory = %issued.directory.id, organization = %org, "SCIM directory created");
            Ok(issued_json(&issued))
        }
        DirectoryOp::RotateToken { id } => {
            let dir = directory_id(id)?;
            let issued = store
                .write(|tx| service::rotate_token(tx, dir))
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{dir} is not a SCIM directory"))?;
            tracing::info!(directory = %dir, "SCIM token rotated");
            Ok(issued_json(&issued))
        }
        DirectoryOp::Delete { id } => {
            let dir = directory_id(id)?;
            let deleted = store
                .write(|tx| service::delete_directory(tx, dir))
                .map_err(|e| e.to_string())?;
            if !deleted {
                return Err(format!(
                    "{dir} is not a SCIM directory (a WorkOS directory is deleted in WorkOS)"
                ));
            }
            tracing::info!(directory = %dir, "SCIM directory deleted");
            Ok(json!({ "deleted": dir.to_string() }))
        }
        DirectoryOp::List => {
            let snap = store.snapshot().map_err(|e| e.to_string())?;
            let all = service::list_directories(&snap).map_err(|e| e.to_string())?;
            Ok(Value::Array(
                all.iter().map(|(d, s)| describe(d, s)).collect(),
            ))
        }
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
