//! `[upstream_auth]` `azure` and `aws_iam` end to end. The cloud services cannot be reached
//! from CI, so their documented endpoints are played by stand-in HTTP servers on 127.0.0.1:
//! the Azure instance metadata token endpoint (managed identity), the Entra ID token
//! endpoint's client-assertion grant (AKS workload identity), and AWS STS
//! `AssumeRoleWithWebIdentity` (EKS IRSA). A real redis-server whose ACL user has the issued
//! token as password completes each loop: rekey logs in with it, serves, and on reload
//! renews every live connection with the next token, after which the old one is removed.
//! Twice in a row each. The IAM token's signature itself is checked byte for byte against
//! botocore in `src/upstream/credentials/aws.rs`.

use crate::common::*;
use base64::Engine;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One request a stand-in received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

type Handler = Box<dyn Fn(&Seen) -> (u16, String) + Send>;

/// An HTTP/1.1 server on 127.0.0.1 answering with `handler`, one request per connection.
struct StandIn {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    fn start(handler: Handler) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let Some(req) = read_request(&mut conn) else {
                    continue;
                };
                let (status, body) = handler(&req);
                log.lock().unwrap().push(req);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        StandIn { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn read_request(conn: &mut TcpStream) -> Option<Seen> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}

/// `k=v&…` decoded.
fn form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An Entra ID-shaped access token: a JWT whose claims name the object id, numbered `n`.
fn entra_token(oid: &str, n: usize) -> String {
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2lnbmF0dXJl{n}",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#.to_string()),
        b64(format!(
            r#"{{"aud":"https://redis.azure.com","oid":"{oid}","n":{n}}}"#
        ))
    )
}

/// rekey with `env` set, logging at debug to a file (for the leak checks).
struct CloudRekey {
    port: u16,
    admin_port: u16,
    log: std::path::PathBuf,
    child: Child,
}

impl CloudRekey {
    fn start(redis: &RedisServer, auth: &str, env: &[(&str, String)]) -> CloudRekey {
        let (port, admin_port) = (free_port(), free_port());
        let dir = scratch_dir("rekey-cloud");
        let config = dir.join("rekey.toml");
        let log = dir.join("rekey.log");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:{admin_port}\"\n\
                 upstream = \"redis://127.0.0.1:{}\"\n{auth}\n",
                redis.port
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rekey"));
        cmd.args(["-c", config.to_str().unwrap()])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for var in [
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let r = CloudRekey {
            port,
            admin_port,
            log,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rekey did not start: {}",
                std::fs::read_to_string(&r.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn client(&self) -> redis::Connection {
        let con = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        con
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&http(self.admin_port, "GET", "/status").1).unwrap()
    }

    fn renewed(&self) -> u64 {
        self.status()["upstream"]["auth"]["connections"]["renewed"]
            .as_u64()
            .unwrap_or(0)
    }

    fn reload(&self) {
        let (code, body) = http(self.admin_port, "POST", "/reload");
        assert_eq!(code, 200, "{body}");
    }

    fn assert_no_leak(&self, secrets: &[&str]) {
        let status = self.status().to_string();
        let metrics = http(self.admin_port, "GET", "/metrics").1;
        let log = std::fs::read_to_string(&self.log).unwrap();
        for s in secrets {
            assert!(!status.contains(s), "a secret in /status: {status}");
            assert!(!metrics.contains(s), "a secret in /metrics");
            assert!(!log.contains(s), "a secret in the log");
        }
    }
}

impl Drop for CloudRekey {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn admin_conn(redis: &RedisServer) -> redis::Connection {
    let mut admin = redis.direct();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("test-admin")
        .query(&mut admin)
        .unwrap();
    admin
}

fn acl(admin: &mut redis::Connection, args: &[String]) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(args)
        .query(admin)
        .unwrap();
}

/// The user names of Redis's connections but the test's own.
fn upstream_users(admin: &mut redis::Connection) -> HashMap<u64, String> {
    let text: String = redis::cmd("CLIENT").arg("LIST").query(admin).unwrap();
    text.lines()
        .filter(|l| !l.contains(" name=test-admin "))
        .filter_map(|l| {
            let f: HashMap<&str, &str> = l.split(' ').filter_map(|kv| kv.split_once('=')).collect();
            Some((f.get("id")?.parse().ok()?, f.get("user")?.to_string()))
        })
        .collect()
}

/// Serves through rekey with a shared and a pinned connection open, then, twice: the source
/// issues a new token (`next_token` makes Redis accept it), a reload renews every live
/// connection (same ids), the old token is removed from the ACL user, and all is still served.
fn renew_twice(
    rekey: &CloudRekey,
    admin: &mut redis::Connection,
    user: &str,
    mut next_token: impl FnMut(&mut redis::Connection),
    mut drop_old_tokens: impl FnMut(&mut redis::Connection),
) {
    let mut shared = rekey.client();
    let mut watcher = rekey.client();
    let _: () = redis::cmd("WATCH").arg("w").query(&mut watcher).unwrap(); // pinned
    for round in 0..2 {
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg(round)
            .query(&mut shared)
            .unwrap();
        let before = upstream_users(admin);
        assert!(
            before.values().any(|u| u == user),
            "rekey logs in as {user}: {before:?}"
        );
        let renewed = rekey.renewed();
        next_token(admin);
        rekey.reload();
        let live = before.values().filter(|u| *u == user).count() as u64;
        wait_for("every live connection renewed", || {
            rekey.renewed() >= renewed + live
        });
        drop_old_tokens(admin);
        let after = upstream_users(admin);
        for id in before.keys() {
            assert!(after.contains_key(id), "connection {id} dropped: {after:?}");
        }
        let v: String = redis::cmd("GET").arg("k").query(&mut shared).unwrap();
        assert_eq!(v, round.to_string());
        let (ok,): (String,) = redis::pipe()
            .atomic()
            .set("w", round)
            .query(&mut watcher)
            .unwrap_or_else(|e| panic!("the pinned connection: {e}"));
        assert_eq!(ok, "OK");
        let _: () = redis::cmd("WATCH").arg("w").query(&mut watcher).unwrap();
        // A new connection logs in with the new token.
        let mut fresh = rekey.client();
        let _: () = redis::cmd("SELECT")
            .arg(round + 1)
            .query(&mut fresh)
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("fresh")
            .arg(1)
            .query(&mut fresh)
            .unwrap();
    }
}

#[test]
fn azure_managed_identity_tokens_from_the_metadata_endpoint_log_in_and_renew() {
    let redis = RedisServer::start();
    let mut admin = admin_conn(&redis);
    let oid = "6f1c7a52-1111-4222-8333-944455556666";
    let issued = Arc::new(Mutex::new(1usize));
    let count = issued.clone();
    let imds = StandIn::start(Box::new(move |req| {
        let ok = req.method == "GET"
            && req.path.starts_with("/metadata/identity/oauth2/token?")
            && req.headers.get("metadata").map(String::as_str) == Some("true");
        if !ok {
            return (400, r#"{"error":"invalid_request"}"#.into());
        }
        let n = *count.lock().unwrap();
        let body = serde_json::json!({
            "access_token": entra_token("6f1c7a52-1111-4222-8333-944455556666", n),
            "expires_on": (unix_now() + 3600).to_string(),
            "expires_in": "3600",
            "resource": "https://redis.azure.com",
            "token_type": "Bearer",
        });
        (200, body.to_string())
    }));
    acl(
        &mut admin,
        &[
            oid.into(),
            "on".into(),
            format!(">{}", entra_token(oid, 1)),
            "~*".into(),
            "&*".into(),
            "+@all".into(),
        ],
    );
    let rekey = CloudRekey::start(
        &redis,
        &format!(
            "[upstream_auth.azure]\nidentity = \"managed\"\nclient_id = \"uami-client-id\"\nimds_endpoint = \"{}/metadata/identity/oauth2/token\"",
            imds.url()
        ),
        &[],
    );
    let issued_next = issued.clone();
    renew_twice(
        &rekey,
        &mut admin,
        oid,
        |admin| {
            let mut n = issued_next.lock().unwrap();
            *n += 1;
            acl(admin, &[oid.into(), format!(">{}", entra_token(oid, *n))]);
        },
        |admin| {
            let n = *issued.lock().unwrap();
            acl(
                admin,
                &[oid.into(), format!("<{}", entra_token(oid, n - 1))],
            );
        },
    );
    let first = &imds.requests()[0];
    let query = form(first.path.split_once('?').unwrap().1);
    assert_eq!(query["resource"], "https://redis.azure.com");
    assert_eq!(query["client_id"], "uami-client-id");
    assert_eq!(query["api-version"], "2018-02-01");
    let status = rekey.status();
    assert_eq!(status["upstream"]["auth"]["user"], oid);
    assert_eq!(
        status["upstream"]["auth"]["source"],
        "azure (managed identity)"
    );
    let tokens: Vec<String> = (1..=3).map(|n| entra_token(oid, n)).collect();
    let secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    rekey.assert_no_leak(&secrets);
}

#[test]
fn aks_workload_identity_uses_the_client_assertion_grant_and_renews() {
    let redis = RedisServer::start();
    let mut admin = admin_conn(&redis);
    let oid = "0a0b0c0d-2222-4333-8444-955566667777";
    let dir = scratch_dir("workload");
    let assertion_file = dir.join("azure-identity-token");
    std::fs::write(&assertion_file, "federated-sa-token-1\n").unwrap();
    let issued = Arc::new(Mutex::new(1usize));
    let count = issued.clone();
    let entra = StandIn::start(Box::new(move |req| {
        let f = form(&req.body);
        let ok = req.method == "POST"
            && req.path == "/tenant-1234/oauth2/v2.0/token"
            && f.get("grant_type").map(String::as_str) == Some("client_credentials")
            && f.get("client_assertion_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            && f.get("client_assertion")
                .is_some_and(|a| a.starts_with("federated-sa-token-"))
            && f.get("client_id").map(String::as_str) == Some("wi-client-id")
            && f.get("scope").map(String::as_str) == Some("https://redis.azure.com/.default");
        if !ok {
            return (
                400,
                r#"{"error":"invalid_client","error_description":"AADSTS700016: bad request"}"#
                    .into(),
            );
        }
        let n = *count.lock().unwrap();
        let body = serde_json::json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": entra_token("0a0b0c0d-2222-4333-8444-955566667777", n),
        });
        (200, body.to_string())
    }));
    acl(
        &mut admin,
        &[
            oid.into(),
            "on".into(),
            format!(">{}", entra_token(oid, 1)),
            "~*".into(),
            "&*".into(),
            "+@all".into(),
        ],
    );
    let rekey = CloudRekey::start(
        &redis,
        "[upstream_auth.azure]",
        &[
            ("AZURE_CLIENT_ID", "wi-client-id".into()),
            ("AZURE_TENANT_ID", "tenant-1234".into()),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                assertion_file.display().to_string(),
            ),
            ("AZURE_AUTHORITY_HOST", format!("{}/", entra.url())),
        ],
    );
    let issued_next = issued.clone();
    let file = assertion_file.clone();
    renew_twice(
        &rekey,
        &mut admin,
        oid,
        |admin| {
            let mut n = issued_next.lock().unwrap();
            *n += 1;
            // The kubelet rotates the projected token too: it is read again each time.
            std::fs::write(&file, format!("federated-sa-token-{n}\n")).unwrap();
            acl(admin, &[oid.into(), format!(">{}", entra_token(oid, *n))]);
        },
        |admin| {
            let n = *issued.lock().unwrap();
            acl(
                admin,
                &[oid.into(), format!("<{}", entra_token(oid, n - 1))],
            );
        },
    );
    let assertions: Vec<String> = entra
        .requests()
        .iter()
        .map(|r| form(&r.body)["client_assertion"].clone())
        .collect();
    assert_eq!(
        assertions,
        [
            "federated-sa-token-1",
            "federated-sa-token-2",
            "federated-sa-token-3"
        ]
    );
    assert_eq!(
        rekey.status()["upstream"]["auth"]["source"],
        "azure (workload identity)"
    );
    let tokens: Vec<String> = (1..=3).map(|n| entra_token(oid, n)).collect();
    let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    secrets.push("federated-sa-token");
    rekey.assert_no_leak(&secrets);
}

#[test]
fn a_refused_token_request_stops_the_start_naming_the_source() {
    let redis = RedisServer::start();
    let imds = StandIn::start(Box::new(|_| {
        (
            400,
            r#"{"error":"invalid_request","error_description":"Identity not found"}"#.into(),
        )
    }));
    let dir = scratch_dir("azure-bad");
    let config = dir.join("rekey.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\nupstream = \"redis://127.0.0.1:{}\"\n[upstream_auth.azure]\nidentity = \"managed\"\nimds_endpoint = \"{}/metadata/identity/oauth2/token\"\n",
            free_port(),
            redis.port,
            imds.url()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(["-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstream_auth azure (managed identity)")
            && err.contains("400: invalid_request Identity not found"),
        "{err}"
    );
}

/// The IAM tokens rekey may make for `user` on `cache` with `creds`, for each second from
/// `from` on: Redis accepts whichever one rekey signs in that window.
fn iam_tokens(
    cache: &str,
    user: &str,
    creds: &rekey::upstream::credentials::aws::AwsCredentials,
    from: u64,
    secs: u64,
) -> Vec<String> {
    use rekey::upstream::credentials::aws::{presign, AwsSpec};
    let spec = AwsSpec {
        cache_name: cache.into(),
        region: Some("us-east-1".into()),
        serverless: false,
        service: "elasticache".into(),
    };
    (from..from + secs)
        .map(|t| {
            presign(
                &spec,
                user,
                "us-east-1",
                creds,
                UNIX_EPOCH + Duration::from_secs(t),
            )
            .unwrap()
        })
        .collect()
}

#[test]
fn elasticache_iam_tokens_from_web_identity_credentials_log_in_and_renew() {
    use rekey::upstream::credentials::aws::AwsCredentials;
    let redis = RedisServer::start();
    let mut admin = admin_conn(&redis);
    let dir = scratch_dir("irsa");
    let web_token = dir.join("token");
    std::fs::write(&web_token, "eks-projected-sa-token").unwrap();
    let round = Arc::new(Mutex::new(1usize));
    let current = round.clone();
    let keys = |n: usize| AwsCredentials {
        access_key_id: format!("ASIASTANDIN{n}"),
        secret_access_key: format!("stand-in-secret/{n}"),
        session_token: Some(format!("stand-in-session+{n}==")),
        expires_at: None,
    };
    let sts = StandIn::start(Box::new(move |req| {
        let f = form(&req.body);
        let ok = req.method == "POST"
            && f.get("Action").map(String::as_str) == Some("AssumeRoleWithWebIdentity")
            && f.get("RoleArn").map(String::as_str) == Some("arn:aws:iam::123456789012:role/rekey")
            && f.get("WebIdentityToken").map(String::as_str) == Some("eks-projected-sa-token");
        if !ok {
            return (
                400,
                "<ErrorResponse><Error><Code>InvalidIdentityToken</Code></Error></ErrorResponse>"
                    .into(),
            );
        }
        let n = *current.lock().unwrap();
        (200, format!(
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
             <AccessKeyId>ASIASTANDIN{n}</AccessKeyId><SecretAccessKey>stand-in-secret/{n}</SecretAccessKey>\
             <SessionToken>stand-in-session+{n}==</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>\
             </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
        ))
    }));
    // Every token rekey may sign over the next few minutes, with each round's keys.
    let window = |n: usize| iam_tokens("my-cache", "app-iam", &keys(n), unix_now() - 2, 240);
    let add = |admin: &mut redis::Connection, n: usize| {
        let mut args: Vec<String> = vec![
            "app-iam".into(),
            "on".into(),
            "~*".into(),
            "&*".into(),
            "+@all".into(),
        ];
        args.extend(window(n).into_iter().map(|t| format!(">{t}")));
        acl(admin, &args);
    };
    add(&mut admin, 1);
    let rekey = CloudRekey::start(
        &redis,
        "[upstream_auth]\nuser = \"app-iam\"\n[upstream_auth.aws_iam]\ncache_name = \"my-cache\"\nregion = \"us-east-1\"",
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", web_token.display().to_string()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/rekey".into()),
            ("AWS_ENDPOINT_URL_STS", sts.url()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9".into()),
        ],
    );
    let next = round.clone();
    renew_twice(
        &rekey,
        &mut admin,
        "app-iam",
        |admin| {
            let mut n = next.lock().unwrap();
            *n += 1;
            add(admin, *n);
        },
        |admin| {
            // Only the current round's tokens stay: the old keys' tokens no longer log in.
            let n = *round.lock().unwrap();
            let mut args: Vec<String> = vec!["app-iam".into(), "resetpass".into()];
            args.extend(window(n).into_iter().map(|t| format!(">{t}")));
            acl(admin, &args);
        },
    );
    let status = rekey.status();
    let auth = &status["upstream"]["auth"];
    assert_eq!(auth["source"], "aws_iam my-cache");
    let expires = auth["expires_at_unix"].as_f64().unwrap();
    let issued = auth["issued_unix"].as_f64().unwrap();
    assert!(
        (expires - issued - 900.0).abs() < 2.0,
        "a token lasts 15 minutes: {auth}"
    );
    assert_eq!(sts.requests().len(), 3);
    rekey.assert_no_leak(&[
        "stand-in-secret",
        "stand-in-session",
        "X-Amz-Signature",
        "eks-projected-sa-token",
    ]);
}
