//! heare-authctl's errors and the exit code each maps to (0 ok, 1 error, 2 usage, 3 not found,
//! 4 conflict after retries). Messages are one line and say what to do.

use heare_auth_store::StoreError;
use heare_auth_store::keyfile::KeyFileError;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error("no key with id {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("{0}")]
    Other(String),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            CtlError::NotFound(_) => 3,
            CtlError::Conflict(_) => 4,
            CtlError::Store(StoreError::Conflict { .. }) => 4,
            _ => 1,
        }
    }
}
