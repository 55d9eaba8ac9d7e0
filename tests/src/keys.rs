//! Key files for tests, in the Python service's format (and our `secret_hash` extension).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One key of a test file.
#[derive(Clone)]
pub struct TestKey {
    pub id: String,
    pub secret: String,
    pub name: String,
    pub metadata: Value,
    pub expires_at: Option<String>,
    /// Store `secret_hash` instead of the plaintext `secret`.
    pub hashed: bool,
}

impl TestKey {
    pub fn new(id: &str, secret: &str) -> Self {
        TestKey {
            id: id.into(),
            secret: secret.into(),
            name: format!("name of {id}"),
            metadata: json!({ "env": "test", "id": id }),
            expires_at: None,
            hashed: false,
        }
    }

    pub fn hashed(mut self) -> Self {
        self.hashed = true;
        self
    }

    pub fn expires_at(mut self, at: &str) -> Self {
        self.expires_at = Some(at.into());
        self
    }

    fn to_json(&self) -> Value {
        let mut key = json!({
            "id": self.id,
            "name": self.name,
            "secret_type": "shared_secret",
            "created_at": "2024-01-20T10:30:00Z",
            "updated_at": null,
            "expires_at": self.expires_at,
            "metadata": self.metadata,
        });
        if self.hashed {
            key["secret_hash"] = json!(secret_hash(&self.secret));
        } else {
            key["secret"] = json!(self.secret);
        }
        key
    }
}

/// `sha256:<hex>` of a secret, as the `secret_hash` field holds it.
pub fn secret_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A key file pretty-printed with indent 2, as the Python service writes it.
pub fn key_file(keys: &[TestKey]) -> Vec<u8> {
    let document = json!({ "keys": keys.iter().map(TestKey::to_json).collect::<Vec<_>>() });
    serde_json::to_vec_pretty(&document).unwrap_or_default()
}
