//! One RocketMQ cluster as the layers above see it: its name, its name
//! servers, and the [`Admin`] (and so the connection pool) every call to its
//! brokers goes through. It owns name-server fallback, written once: ask
//! each name server in turn until one answers.

use std::sync::Arc;

use super::{Admin, ClusterInfo, Error, TopicRoute};

/// A cluster handle; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Cluster {
    name: String,
    name_servers: Arc<[String]>,
    admin: Admin,
}

impl Cluster {
    /// The cluster `name`, reached through `name_servers` (tried in order)
    /// and `admin`.
    pub fn new(name: impl Into<String>, name_servers: Vec<String>, admin: Admin) -> Cluster {
        Cluster {
            name: name.into(),
            name_servers: name_servers.into(),
            admin,
        }
    }

    /// The cluster's name (the `rocketmq_cluster` label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its name servers, in the order they are asked.
    pub fn name_servers(&self) -> &[String] {
        &self.name_servers
    }

    /// Admin calls to its brokers.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// 106 GET_BROKER_CLUSTER_INFO from the first name server that answers.
    ///
    /// # Errors
    /// The last name server's error when none answered.
    pub async fn cluster_info(&self) -> Result<ClusterInfo, Error> {
        self.ask("cluster info", |admin, namesrv| async move {
            admin.cluster_info(&namesrv).await
        })
        .await
    }

    /// 105 GET_ROUTEINFO_BY_TOPIC from the first name server that answers.
    /// A topic no name server routes is an answer: an error for which
    /// [`Error::is_topic_missing`] holds.
    ///
    /// # Errors
    /// As [`Cluster::cluster_info`].
    pub async fn topic_route(&self, topic: &str) -> Result<TopicRoute, Error> {
        self.ask("topic route", |admin, namesrv| {
            let topic = topic.to_string();
            async move { admin.topic_route(&namesrv, &topic).await }
        })
        .await
    }

    /// 206 every topic name, from the first name server that answers.
    ///
    /// # Errors
    /// As [`Cluster::cluster_info`].
    pub async fn topic_list(&self) -> Result<Vec<String>, Error> {
        self.ask("topic list", |admin, namesrv| async move {
            admin.topic_list(&namesrv).await
        })
        .await
    }

    /// Ask each name server in turn. An answer, even a failure code, ends
    /// the search: another name server would say the same. A transport
    /// failure moves on to the next; each is logged here and counted by the
    /// admin's request observer, so none goes unseen.
    async fn ask<T, F, Fut>(&self, what: &str, call: F) -> Result<T, Error>
    where
        F: Fn(Admin, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut last = None;
        for namesrv in self.name_servers.iter() {
            match call(self.admin.clone(), namesrv.clone()).await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_answer() => return Err(error),
                Err(error) => {
                    tracing::debug!(message = "Name server did not answer; trying the next.", cluster = %self.name, namesrv = %namesrv, what, %error);
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Io {
            addr: "(none)".to_string(),
            message: format!("cluster {} has no name server configured", self.name),
        }))
    }
}
