//! `password_file` (and `user_file`): the secret is the file's content. The refresher
//! watches both files (Kubernetes Secret `..data` swaps included, see
//! [`watch`](crate::upstream::credentials::watch)) and reads them again on every change.

use crate::upstream::credentials::source::{read_trimmed, resolve_user, UserSpec};
use crate::upstream::credentials::{Credential, Secret};
use std::path::PathBuf;

pub struct FileSource {
    password: PathBuf,
    user: UserSpec,
}

impl FileSource {
    pub fn new(password: PathBuf, user: UserSpec) -> FileSource {
        FileSource { password, user }
    }

    pub fn name(&self) -> String {
        format!("password_file {}", self.password.display())
    }

    /// The password file, and the user file when there is one.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut out = vec![self.password.clone()];
        if let UserSpec::File(p) = &self.user {
            out.push(p.clone());
        }
        out
    }

    pub async fn fetch(&self) -> Result<Credential, String> {
        let secret = read_trimmed(&self.password, "password_file").await?;
        Ok(Credential {
            user: resolve_user(&self.user).await?,
            secret: Secret::new(secret),
            expires_at: None,
        })
    }
}
