//! Where the keys are: the one upstream Redis (for a Sentinel setup, the primary the
//! sentinels name now), or every primary of a cluster with the slot map that says which
//! primary a new name belongs to.

use crate::cluster::slot::{slot_of, SLOTS};
use crate::cluster::Cluster;
use crate::config::{Config, UpstreamTarget};
use crate::migrate::MigrateError;
use crate::upstream::sentinel;
use crate::upstream::UpstreamUrl;

pub struct Nodes {
    /// The nodes to scan (a cluster's primaries, in address order).
    pub urls: Vec<UpstreamUrl>,
    /// The db the keys are in (always 0 in a cluster).
    pub db: u32,
    /// For a cluster: the node of each slot (`u16::MAX` while a slot is not served).
    slots: Option<Vec<u16>>,
}

impl Nodes {
    /// Finds the nodes the config's upstream names.
    pub async fn discover(config: &Config) -> Result<Nodes, MigrateError> {
        let url = match &config.upstream {
            UpstreamTarget::Cluster { seeds } => return Self::cluster(config, seeds).await,
            UpstreamTarget::Sentinel(sentinel) => {
                sentinel::resolve(sentinel, config.limits.connect_timeout).await?
            }
            UpstreamTarget::Single(url) => url.clone(),
        };
        Ok(Nodes {
            db: url.db,
            urls: vec![url],
            slots: None,
        })
    }

    async fn cluster(config: &Config, seeds: &[UpstreamUrl]) -> Result<Nodes, MigrateError> {
        let template = config.upstream_settings(seeds[0].clone());
        let cluster = Cluster::start(seeds.to_vec(), template).await;
        if cluster.topology().nodes.is_empty() {
            cluster.refresh().await?;
        }
        let topology = cluster.topology();
        let urls: Vec<UpstreamUrl> = topology
            .nodes
            .iter()
            .map(|n| n.upstream.url().clone())
            .collect();
        let slots = (0..SLOTS as u16)
            .map(|s| {
                topology
                    .node_of(s)
                    .and_then(|n| topology.nodes.iter().position(|m| m.id == n.id))
                    .map_or(u16::MAX, |i| i as u16)
            })
            .collect();
        Ok(Nodes {
            urls,
            db: 0,
            slots: Some(slots),
        })
    }

    pub fn is_cluster(&self) -> bool {
        self.slots.is_some()
    }

    /// The node that holds (or would hold) `key`.
    pub fn node_of(&self, key: &[u8]) -> Option<usize> {
        match &self.slots {
            None => Some(0),
            Some(slots) => match slots[slot_of(key) as usize] {
                u16::MAX => None,
                i => Some(i as usize),
            },
        }
    }

    /// True when a key can be renamed to `target` in place: always on one Redis; in a
    /// cluster only within one slot.
    pub fn same_slot(&self, key: &[u8], target: &[u8]) -> bool {
        self.slots.is_none() || slot_of(key) == slot_of(target)
    }
}
