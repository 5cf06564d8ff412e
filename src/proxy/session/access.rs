//! The access check phase's consequences: a request the identity's ACL refuses is answered
//! with Redis's `-NOPERM` text for the upstream's version, logged in `ACL LOG` (with the
//! client's `CLIENT INFO` line), counted in `rekey_acl_denied_total`, and, inside `MULTI`,
//! makes the transaction fail at `EXEC`, as Redis does when it refuses a queued command.

use crate::acl::log::Refusal;
use crate::acl::{Context, Denial, Denied, Texts};
use crate::commands::CommandSpec;
use crate::protocol::{encode, Request};
use crate::proxy::session::Session;
use crate::stats;
use bytes::Bytes;
use std::time::Instant;

impl Session {
    /// Whether the client's identity may run `req` (its ACL, on the names it sent); the
    /// refusal to answer, else.
    pub(super) async fn access_refusal(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
    ) -> Option<Bytes> {
        let acl = self.view.acl.as_ref()?;
        let denied = acl.check(spec, req).err()?;
        // A reply rekey makes waits for frames still owed on the subscribed connection.
        if self.lease.subs.waiting() {
            self.settle().await;
        }
        Some(self.refused(&denied, req))
    }

    /// Logs and counts a refusal; the error the client gets. A refused command inside
    /// `MULTI` makes `EXEC` fail; a refused `EXEC` discards the transaction, as in Redis.
    fn refused(&mut self, denied: &Denied, req: &Request) -> Bytes {
        let user = self.conn.user.clone().unwrap_or_else(|| "default".into());
        let (reason, object) = denied.log_fields(req);
        if denied.kind != Denial::Protected {
            self.log_refusal(reason, object, &user);
        }
        stats::acl_denied(self.view.app_stats.label(), reason);
        let error = denied.error(&user, Texts::of(&self.proxy.upstream_info.version));
        if denied.command == "exec" {
            self.discard_transaction();
            return encode::error(&format!(
                "EXECABORT Transaction discarded because of: {error}"
            ));
        }
        if self.lease.in_multi {
            self.abort_transaction();
        }
        encode::error(&error)
    }

    fn log_refusal(&mut self, reason: &'static str, object: String, user: &str) {
        let context = if self.lease.in_multi {
            Context::Multi
        } else {
            Context::Toplevel
        };
        self.proxy.acl_log.add(Refusal {
            reason,
            context: context.name(),
            object,
            username: user.to_string(),
            identity: self.viewer(),
            client_info: self.client.line(Instant::now()),
        });
    }

    /// What Redis does to a client whose `EXEC` it refuses: the transaction (if any) is
    /// discarded and its watched keys forgotten.
    fn discard_transaction(&mut self) {
        // What was routed before (`MULTI` itself, in the same pipeline) leaves first.
        self.flush_batch();
        if let Some(conn) = &self.lease.pin {
            let word = if self.lease.in_multi {
                "DISCARD"
            } else {
                "UNWATCH"
            };
            conn.send_quiet(&Request::from_args([word]));
        }
        self.lease.queued = Default::default();
        self.lease.at_exec = Default::default();
        self.lease.in_multi = false;
        self.lease.watching = false;
        self.view.snapshot = None;
        self.release_if_idle();
    }
}
