//! The conformance [`Harness`] over the simulated ZFS, shared by the suites that run on it.
#![allow(dead_code)] // Each test binary uses its own part.

use std::sync::Arc;

use async_trait::async_trait;
use zferry_core::backend::{ZfsBackend, ZfsError};
use zferry_core::name::DatasetName;
use zferry_sim::{DatasetOptions, SimZfs};
use zferry_sim_tests::conformance::{CaseFailure, DatasetSpec, Harness};

/// The pool every case's root lives in.
const POOL: &str = "zsim";

/// Its capacity: far more than all cases write together.
const POOL_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// The seed of the simulated world's GUIDs.
const SEED: u64 = 0x5eed_c0f0_2026;

/// The unix time the simulated `creation` property reads.
const CREATION_UNIX: i64 = 1_763_700_000;

/// [`Harness`] over one simulated world.
#[derive(Debug)]
pub(crate) struct SimHarness {
    sim: SimZfs,
}

impl SimHarness {
    /// A fresh simulated world with one large pool.
    pub(crate) fn new() -> Self {
        let sim = SimZfs::new(SEED, || CREATION_UNIX);
        // Streams as long as OpenZFS's, so that sizes and cut points mean the same.
        sim.set_payload_scale(1);
        sim.setup()
            .create_pool(POOL, POOL_BYTES)
            .expect("create the simulated pool");
        Self { sim }
    }
}

/// A setup error as a case failure.
fn setup(what: &str) -> impl FnOnce(ZfsError) -> CaseFailure + '_ {
    move |e| CaseFailure::new(format!("setup: {what}: {e}"))
}

#[async_trait]
impl Harness for SimHarness {
    fn backend(&self) -> &dyn ZfsBackend {
        &self.sim
    }

    fn shared_backend(&self) -> Arc<dyn ZfsBackend> {
        Arc::new(self.sim.clone())
    }

    fn label(&self) -> String {
        "simulated ZFS (zferry-sim)".to_owned()
    }

    async fn fresh_root(&self, case: &str) -> Result<DatasetName, CaseFailure> {
        let root = DatasetName::parse(&format!("{POOL}/case {case}"))
            .map_err(|e| CaseFailure::new(format!("root name: {e}")))?;
        // Every run starts from a fresh world, but a case may be run twice by a filter.
        let _ = self.sim.setup().destroy_dataset(&root, true);
        self.sim
            .setup()
            .create_dataset(&root)
            .map_err(setup("create root"))?;
        Ok(root)
    }

    async fn create_dataset(
        &self,
        name: &DatasetName,
        spec: DatasetSpec,
    ) -> Result<(), CaseFailure> {
        let options = DatasetOptions {
            volume: spec.volume_size.is_some(),
            encrypted: spec.encrypted,
            ..DatasetOptions::default()
        };
        self.sim
            .setup()
            .create_dataset_with(name, &options)
            .map_err(setup("create dataset"))
    }

    async fn write(&self, dataset: &DatasetName, n_bytes: u64) -> Result<(), CaseFailure> {
        self.sim
            .setup()
            .write(dataset, n_bytes)
            .map_err(setup("write"))
    }

    async fn create_small_pool(&self, name: &str, bytes: u64) -> Result<String, CaseFailure> {
        self.sim
            .setup()
            .create_pool(name, bytes)
            .map_err(setup("create pool"))?;
        Ok(name.to_owned())
    }

    async fn destroy_pool(&self, pool: &str) -> Result<(), CaseFailure> {
        // The simulated world has no pool destruction; empty the pool so it does not matter.
        let root =
            DatasetName::parse(pool).map_err(|e| CaseFailure::new(format!("pool name: {e}")))?;
        let children = self
            .sim
            .list_datasets(Some(&root), &[])
            .await
            .map_err(setup("list pool"))?;
        for entry in children.iter().filter(|e| e.name.depth() == 2) {
            self.sim
                .setup()
                .destroy_dataset(&entry.name, true)
                .map_err(setup("empty pool"))?;
        }
        Ok(())
    }

    async fn unload_key(&self, dataset: &DatasetName) -> Result<(), CaseFailure> {
        self.sim
            .setup()
            .unload_key(dataset)
            .map_err(setup("unload key"))
    }
}
