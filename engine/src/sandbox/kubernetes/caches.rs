//! The dependency caches on a cluster: a PersistentVolumeClaim per fetch (its fields as
//! annotations) and a ConfigMap per lockfile key naming the complete one.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;

use super::{Cluster, DEPS_LABEL, MANAGED_BY};
use crate::sandbox::SandboxError;

impl Cluster {
    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn pointers(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    /// A cache pointer's fields (a ConfigMap's data), if it exists.
    pub(in crate::sandbox) async fn pointer(
        &self,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, SandboxError> {
        match self.pointers().get_opt(name).await? {
            Some(map) => Ok(Some(map.data.unwrap_or_default().into_iter().collect())),
            None => Ok(None),
        }
    }

    /// Records a pointer; when another worker recorded one first, its fields are returned.
    pub(in crate::sandbox) async fn create_pointer(
        &self,
        name: &str,
        fields: HashMap<String, String>,
    ) -> Result<HashMap<String, String>, SandboxError> {
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(deps_labels("pointer")),
                ..Default::default()
            },
            data: Some(fields.clone().into_iter().collect()),
            ..Default::default()
        };
        match self.pointers().create(&PostParams::default(), &map).await {
            Ok(_) => Ok(fields),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Ok(self.pointer(name).await?.unwrap_or(fields))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(in crate::sandbox) async fn claim_exists(&self, name: &str) -> Result<bool, SandboxError> {
        let claim = self.claims().get_opt(name).await?;
        // A claim being deleted (its pods still using it) is no cache to mount.
        Ok(claim.is_some_and(|c| c.metadata.deletion_timestamp.is_none()))
    }

    /// A new claim for a cache of `bytes`, its fields kept as annotations.
    pub(in crate::sandbox) async fn create_claim(
        &self,
        name: &str,
        fields: HashMap<String, String>,
        bytes: i64,
    ) -> Result<(), SandboxError> {
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(deps_labels("data")),
                annotations: Some(fields.into_iter().collect()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec![self.config.cache_access_mode.clone()]),
                storage_class_name: self.config.cache_storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".into(),
                        Quantity(bytes.to_string()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let made = self.claims().create(&PostParams::default(), &claim).await?;
        // Admission fills in the default StorageClass; none there means the claim would stay
        // Pending and every fetch wait out its start timeout.
        let class = made.spec.and_then(|s| s.storage_class_name);
        if class.is_none() {
            self.delete_cache_object(name, false).await;
            return Err(SandboxError::Unstartable(
                "the cluster has no default StorageClass for the dependency caches: set SELFHEAL_SANDBOX_CACHE_STORAGE_CLASS".into(),
            ));
        }
        Ok(())
    }

    /// Deletes a claim or a pointer; `false` when the API refused (it stays).
    pub(in crate::sandbox) async fn delete_cache_object(&self, name: &str, pointer: bool) -> bool {
        let deleted = if pointer {
            self.pointers()
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ())
        } else {
            self.claims()
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ())
        };
        match deleted {
            Ok(()) => true,
            Err(kube::Error::Api(e)) if e.code == 404 => true,
            Err(e) => {
                tracing::warn!(%name, error = %e, "could not delete a dependency cache object");
                false
            }
        }
    }

    /// Every cache object: pointers (ConfigMaps) and data (claims), with their fields.
    pub(in crate::sandbox) async fn cache_objects(
        &self,
    ) -> Result<Vec<(String, HashMap<String, String>)>, SandboxError> {
        let selector = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        let mut out = Vec::new();
        for map in self.pointers().list(&selector).await?.items {
            let name = map.metadata.name.unwrap_or_default();
            out.push((name, map.data.unwrap_or_default().into_iter().collect()));
        }
        for claim in self.claims().list(&selector).await?.items {
            let name = claim.metadata.name.unwrap_or_default();
            let fields = claim.metadata.annotations.unwrap_or_default();
            out.push((name, fields.into_iter().collect()));
        }
        Ok(out)
    }
}

fn deps_labels(kind: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (DEPS_LABEL.to_string(), kind.to_string()),
    ])
}
