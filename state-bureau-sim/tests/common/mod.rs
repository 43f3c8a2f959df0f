//! A gateway served in the test process on a loopback port, over a freshly generated world
//! and PKI, for the tests that drive it from outside: `run` here, and the `interop` command
//! line's (`proto/client/tests/cli.rs` includes this file by path).

#![allow(dead_code)]

use interop_gateway_cli::pki;
use state_bureau_sim::bookings::WorldData;
pub use state_bureau_sim::demo::{self, Served};
use std::path::Path;

pub const SEED: u64 = 31;

/// Generates a world, issues a PKI and serves a fresh gateway on a loopback port.
pub async fn serve(dir: &Path) -> Served {
    let world_dir = dir.join("world");
    let wd = world_dir.clone();
    tokio::task::spawn_blocking(move || state_bureau_sim::generate::generate(SEED, 1_200, &wd))
        .await
        .unwrap()
        .unwrap();
    let data = WorldData::load(&world_dir).unwrap();
    let pki = pki::init_for_world(&dir.join("pki"), &data.world).unwrap();
    // With MatcherService, for `interop admin remove-subject`.
    demo::serve_in_process(&world_dir, &dir.join("data"), &pki, &data.world, 2, true)
        .await
        .unwrap()
}
