//! `ACL …` as an app sees it through rekey: its own identity and rekey's users, never the
//! upstream's (whose one user every app shares). `WHOAMI`, `CAT`, `DRYRUN`, `GETUSER`,
//! `LIST`, `USERS` and `LOG` are answered from rekey's config and its ACL log, in Redis's
//! reply shapes; users are changed in the config file, so `SETUSER` and the like are refused.
//! Whether the caller may run each of them is its own ACL's to say, checked before (as in
//! Redis: `ACL LOG` is `@admin @dangerous`).

use super::{bulk, text, wrong_args, Env, Reply};
use crate::acl::log::Entry;
use crate::acl::{arity_fits, Acl, Texts};
use crate::commands::{self, acl_table};
use crate::config::Config;
use crate::protocol::encode::{Encoder, Proto};
use crate::protocol::scan::parse_int;
use crate::protocol::Request;
use crate::proxy::session::conn::ConnState;
use std::time::Instant;

/// `ACL <subcommand> …`.
pub(in crate::proxy::session) fn acl(req: &Request, conn: &ConnState, env: &Env) -> Reply {
    let sub = req.arg(1).unwrap_or_default().to_ascii_uppercase();
    let config = env.proxy.config.load();
    let n = req.len();
    match sub.as_slice() {
        b"WHOAMI" if n == 2 => Reply::Frame(bulk(user_name(conn).as_bytes())),
        b"CAT" if n <= 3 => cat(req, conn.proto),
        b"USERS" if n == 2 => users(&config, conn.proto),
        b"LIST" if n == 2 => list(&config, conn.proto),
        b"GETUSER" if n == 3 => getuser(&config, &text(req.arg(2).unwrap_or_default()), conn),
        b"DRYRUN" if n >= 4 => dryrun(&config, req, env),
        b"LOG" if n <= 3 => log(req, conn.proto, env),
        b"HELP" | b"GENPASS" => Reply::Forward,
        b"WHOAMI" | b"USERS" | b"LIST" | b"GETUSER" | b"DRYRUN" | b"LOG" | b"CAT" => {
            wrong_args(&format!("acl|{}", text(&sub).to_ascii_lowercase()))
        }
        _ => Reply::error(&format!(
            "ERR rekey: ACL {} is not available through the proxy: rekey's users and their ACLs are set in its config file",
            text(&sub)
        )),
    }
}

/// The user the client is logged in as.
fn user_name(conn: &ConnState) -> &str {
    conn.user.as_deref().unwrap_or("default")
}

/// `ACL CAT [category]`: the categories, or the commands of one.
fn cat(req: &Request, proto: Proto) -> Reply {
    let names: Vec<&str> = match req.arg(2) {
        None => acl_table::CATEGORIES.to_vec(),
        Some(wanted) => {
            let wanted = text(wanted).to_ascii_lowercase();
            let Some(bit) = acl_table::CATEGORIES.iter().position(|c| *c == wanted) else {
                return Reply::error(&format!(
                    "ERR Unknown category '{}'",
                    text(req.arg(2).unwrap_or_default())
                ));
            };
            acl_table::ACL_COMMANDS
                .iter()
                .filter(|c| c.categories & (1 << bit) != 0)
                .map(|c| c.name)
                .collect()
        }
    };
    let mut e = Encoder::new(proto);
    e.array(names.len());
    for name in names {
        e.bulk(name.as_bytes());
    }
    Reply::Frame(e.finish())
}

/// The users one can log in as: `default` and every `[[users]]` entry, sorted.
fn user_names(config: &Config) -> Vec<&str> {
    let mut names: Vec<&str> = std::iter::once("default")
        .chain(config.auth.users.iter().map(|u| u.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

fn users(config: &Config, proto: Proto) -> Reply {
    let mut e = Encoder::new(proto);
    let names = user_names(config);
    e.array(names.len());
    for name in names {
        e.bulk(name.as_bytes());
    }
    Reply::Frame(e.finish())
}

/// A user or app as `ACL GETUSER`/`LIST` describe it: whether it has a password (its
/// SHA-256, as Redis shows them) and its ACL.
struct Described {
    passwords: Vec<String>,
    acl: Acl,
}

/// The user (or app) `name` of `config`.
fn describe(config: &Config, name: &str) -> Option<Described> {
    let identity = (name != "default").then_some(name);
    let password = if name == "default" {
        config.auth.requirepass.clone()
    } else {
        let user = config.auth.users.iter().find(|u| u.name == name);
        let app = config
            .listeners
            .iter()
            .any(|l| l.app.as_deref() == Some(name));
        if user.is_none() && !app {
            return None;
        }
        user.map(|u| u.password.clone())
    };
    let acl = config
        .access
        .share(identity)
        .acl
        .as_deref()
        .cloned()
        .unwrap_or_else(Acl::unrestricted);
    Some(Described {
        passwords: password.iter().map(|p| sha256_hex(p.as_bytes())).collect(),
        acl,
    })
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn list(config: &Config, proto: Proto) -> Reply {
    let lines: Vec<String> = user_names(config)
        .into_iter()
        .filter_map(|name| {
            let d = describe(config, name)?;
            let login = if d.passwords.is_empty() {
                "nopass".to_string()
            } else {
                d.passwords
                    .iter()
                    .map(|p| format!("#{p}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            Some(format!("user {name} on {login} {}", d.acl.describe()))
        })
        .collect();
    let mut e = Encoder::new(proto);
    e.array(lines.len());
    for line in lines {
        e.bulk(line.as_bytes());
    }
    Reply::Frame(e.finish())
}

/// `ACL GETUSER name`: Redis's map of flags, passwords, commands, keys, channels and
/// selectors; a null for a name rekey does not know.
fn getuser(config: &Config, name: &str, conn: &ConnState) -> Reply {
    let mut e = Encoder::new(conn.proto);
    let Some(d) = describe(config, name) else {
        e.null();
        return Reply::Frame(e.finish());
    };
    let texts = d.acl.texts();
    e.map(6);
    e.bulk(b"flags");
    let flags: &[&str] = if d.passwords.is_empty() {
        &["on", "nopass"]
    } else {
        &["on"]
    };
    e.array(flags.len());
    for f in flags {
        e.bulk(f.as_bytes());
    }
    e.bulk(b"passwords").array(d.passwords.len());
    for p in &d.passwords {
        e.bulk(p.as_bytes());
    }
    let root = &texts[0];
    e.bulk(b"commands").bulk(root.commands.as_bytes());
    e.bulk(b"keys").bulk(root.keys.as_bytes());
    e.bulk(b"channels").bulk(root.channels.as_bytes());
    e.bulk(b"selectors").array(texts.len() - 1);
    for sel in &texts[1..] {
        e.map(3);
        e.bulk(b"commands").bulk(sel.commands.as_bytes());
        e.bulk(b"keys").bulk(sel.keys.as_bytes());
        e.bulk(b"channels").bulk(sel.channels.as_bytes());
    }
    Reply::Frame(e.finish())
}

/// `ACL DRYRUN user command [arg …]`: what the user would be told, without running it.
fn dryrun(config: &Config, req: &Request, env: &Env) -> Reply {
    let name = text(req.arg(2).unwrap_or_default());
    let Some(d) = describe(config, &name) else {
        return Reply::error(&format!("ERR User '{name}' not found"));
    };
    let command = Request::from_args(req.args().skip(3));
    let cmd_name = command.arg(0).unwrap_or_default();
    let Some(id) = commands::acl_command(cmd_name, command.arg(1)) else {
        return Reply::error(&format!("ERR Command '{}' not found", text(cmd_name)));
    };
    let cmd = &acl_table::ACL_COMMANDS[id as usize];
    if !arity_fits(cmd, command.len()) {
        return wrong_args(cmd.name);
    }
    let texts = Texts::of(&env.proxy.upstream_info.version);
    match d.acl.check(commands::lookup(&command), &command) {
        Ok(()) => Reply::ok(),
        Err(denied) => Reply::Frame(bulk(denied.dryrun(&command, &name, texts).as_bytes())),
    }
}

/// `ACL LOG [count | RESET]`: the newest refusals this client's identity may see.
fn log(req: &Request, proto: Proto, env: &Env) -> Reply {
    let viewer = env.viewer.as_deref();
    let count = match req.arg(2) {
        None => 10,
        Some(a) if a.eq_ignore_ascii_case(b"RESET") => {
            env.proxy.acl_log.reset(viewer);
            return Reply::ok();
        }
        Some(a) => match parse_int(a) {
            Some(n) if n >= 0 => n as usize,
            Some(_) => return Reply::error("ERR value is out of range, must be positive"),
            None => return Reply::error("ERR value is not an integer or out of range"),
        },
    };
    let entries = env.proxy.acl_log.entries(count, viewer);
    let now = Instant::now();
    let mut e = Encoder::new(proto);
    e.array(entries.len());
    for entry in &entries {
        log_entry(&mut e, entry, now);
    }
    Reply::Frame(e.finish())
}

/// One entry with Redis 7.0's fields.
fn log_entry(e: &mut Encoder, entry: &Entry, now: Instant) {
    let r = &entry.refusal;
    e.map(7);
    e.bulk(b"count").int(entry.count as i64);
    e.bulk(b"reason").bulk(r.reason.as_bytes());
    e.bulk(b"context").bulk(r.context.as_bytes());
    e.bulk(b"object").bulk(r.object.as_bytes());
    e.bulk(b"username").bulk(r.username.as_bytes());
    e.bulk(b"age-seconds")
        .double(now.duration_since(entry.at).as_secs_f64());
    e.bulk(b"client-info")
        .bulk(r.client_info.trim_end().as_bytes());
}
