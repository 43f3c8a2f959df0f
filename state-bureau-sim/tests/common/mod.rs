//! A gateway served in the test process on a loopback port, over a freshly generated world
//! and PKI, for the tests that drive it from outside: `run` here, and the `interop` command
//! line's (`proto/client/tests/cli.rs` includes this file by path).

#![allow(dead_code)]

use interop_gateway_cli::pki;
use state_bureau_sim::bookings::WorldData;
pub use state_bureau_sim::demo::{self, Served};
use std::path::Path;

pub const SEED: u64 = 31;

/// Generates a world under `dir/world` and issues a PKI for it under `dir/pki`.
async fn world_and_pki(dir: &Path) -> (std::path::PathBuf, WorldData, pki::PkiDir) {
    let world_dir = dir.join("world");
    let wd = world_dir.clone();
    tokio::task::spawn_blocking(move || state_bureau_sim::generate::generate(SEED, 1_200, &wd))
        .await
        .unwrap()
        .unwrap();
    let data = WorldData::load(&world_dir).unwrap();
    let pki = pki::init_for_world(&dir.join("pki"), &data.world).unwrap();
    (world_dir, data, pki)
}

/// Generates a world, issues a PKI and serves a fresh gateway on a loopback port.
pub async fn serve(dir: &Path) -> Served {
    let (world_dir, data, pki) = world_and_pki(dir).await;
    // With MatcherService, for `interop admin remove-subject`.
    demo::serve_in_process(&world_dir, &dir.join("data"), &pki, &data.world, 2, true)
        .await
        .unwrap()
}

/// Like [`serve`], with the gateway's IDENT engine replaced by what `wrap` makes of the real
/// one: a broken engine, to show the verdict catches what it does.
pub async fn serve_with_ident(
    dir: &Path,
    wrap: impl FnOnce(
        std::sync::Arc<dyn interop_gateway::engines::IdentSearch>,
    ) -> std::sync::Arc<dyn interop_gateway::engines::IdentSearch>,
) -> Served {
    use interop_gateway::{engines, server, store};
    let (world_dir, data, pki) = world_and_pki(dir).await;
    let wd = world_dir.clone();
    let b = tokio::task::spawn_blocking(move || engines::InProcess::load(&wd, 2))
        .await
        .unwrap()
        .unwrap();
    let gw = server::Gateway::start(
        data.world.clone(),
        store::open_embedded(&dir.join("data")).unwrap(),
        wrap(b.ident.clone()),
        b.criminal.clone(),
        Some(server::MatcherServing::InProcess(b.ident.matcher())),
        server::ServeOptions::default(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        gw.serve(listener, server::server_tls(&pki).unwrap(), async {
            let _ = stop_rx.await;
        }),
    );
    Served {
        endpoint,
        stop,
        task,
    }
}
