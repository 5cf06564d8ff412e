//! A real 3-primary Redis Cluster on loopback ports (`redis-server --cluster-enabled yes` and
//! `redis-cli --cluster create`), optionally with replicas; its servers are killed when it is
//! dropped.

use super::RedisServer;
use std::process::Command;
use std::time::{Duration, Instant};

/// What makes a `redis-server` a cluster node here (quick failure detection).
pub const CLUSTER_NODE_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
];

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        Self::start_with_replicas(0)
    }

    /// Three primaries, each with `replicas` replicas.
    pub fn start_with_replicas(replicas: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| RedisServer::start_with(CLUSTER_NODE_ARGS))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed");
        assert!(out.status.success(), "cluster create: {out:?}");
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.ready() || !cluster.replicas_synced(3 * replicas) {
            assert!(Instant::now() < deadline, "cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    pub fn ready(&self) -> bool {
        self.nodes.iter().filter(|n| n.is_running()).all(|n| {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut n.direct())
                .unwrap();
            info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
        })
    }

    /// Every replica is attached and has finished its first sync (a replica that never
    /// synced cannot be promoted).
    pub fn replicas_synced(&self, expected: usize) -> bool {
        let mut synced = 0;
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut n.direct())
                .unwrap();
            if info.contains("role:slave") && info.contains("master_link_status:up") {
                synced += 1;
            }
        }
        synced == expected
    }

    pub fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port)
    }

    pub fn id(&self, node: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[node].direct())
            .unwrap()
    }

    /// Gives `slot` to node `node` on every node (`CLUSTER SETSLOT … NODE`), as the end of a
    /// migration does.
    pub fn assign_slot(&self, slot: u16, node: usize) {
        let id = self.id(node);
        for n in &self.nodes {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&id)
                .query(&mut n.direct())
                .unwrap();
        }
    }

    /// The node index serving each slot (one `CLUSTER SLOTS` for all of them).
    pub fn slot_owners(&self) -> Vec<usize> {
        let alive = self.nodes.iter().find(|n| n.is_running()).unwrap();
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut alive.direct())
            .unwrap();
        let redis::Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS")
        };
        let mut owners = vec![usize::MAX; 16384];
        for r in ranges {
            let redis::Value::Array(items) = r else {
                continue;
            };
            let (redis::Value::Int(start), redis::Value::Int(end), redis::Value::Array(primary)) =
                (&items[0], &items[1], &items[2])
            else {
                continue;
            };
            let redis::Value::Int(port) = primary[1] else {
                panic!("CLUSTER SLOTS port")
            };
            let node = self
                .nodes
                .iter()
                .position(|n| n.port as i64 == port)
                .unwrap();
            owners[*start as usize..=*end as usize].fill(node);
        }
        owners
    }

    /// The node index serving `slot`, asked of the cluster itself.
    pub fn owner(&self, slot: u16) -> usize {
        let alive = self.nodes.iter().find(|n| n.is_running()).unwrap();
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut alive.direct())
            .unwrap();
        let redis::Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS")
        };
        for r in ranges {
            let redis::Value::Array(items) = r else {
                continue;
            };
            let (redis::Value::Int(start), redis::Value::Int(end), redis::Value::Array(primary)) =
                (&items[0], &items[1], &items[2])
            else {
                continue;
            };
            if (*start..=*end).contains(&(slot as i64)) {
                let redis::Value::Int(port) = primary[1] else {
                    panic!()
                };
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port as i64 == port)
                    .unwrap();
            }
        }
        panic!("slot {slot} not served")
    }
}

pub fn keyslot(con: &mut redis::Connection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(con)
        .unwrap()
}
