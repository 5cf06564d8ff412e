//! A real Redis Sentinel on a free loopback port, watching one primary (quorum 1, quick
//! failure detection), killed when dropped. Ready once it names the primary.

use super::{free_port, scratch_dir};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sentinel {
    pub port: u16,
    child: Child,
}

impl Sentinel {
    /// Watches the primary at `127.0.0.1:master_port` as `mymaster`.
    pub fn start(master_port: u16) -> Sentinel {
        let port = free_port();
        let dir = scratch_dir("sentinel");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let s = Sentinel { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let named = s.query(&["SENTINEL", "get-master-addr-by-name", "mymaster"]);
            if matches!(named, Ok(redis::Value::Array(ref a)) if a.len() == 2) {
                return s;
            }
            assert!(Instant::now() < deadline, "sentinel did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One command on a fresh connection.
    pub fn query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let mut c =
            redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?.get_connection()?;
        redis::cmd(args[0]).arg(&args[1..]).query(&mut c)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
