//! A gateway served in the test process on a loopback port, over a freshly generated world
//! and PKI, for the tests that drive it from outside (`run`, the `interop` command line).

#![allow(dead_code)]

use interop_gateway::{backends, pki, server, store};
use state_bureau_sim::bookings::WorldData;
use std::path::Path;

pub const SEED: u64 = 31;

pub struct Served {
    pub endpoint: String,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Generates a world, issues a PKI and serves a fresh gateway on a loopback port.
pub async fn serve(dir: &Path) -> Served {
    let world_dir = dir.join("world");
    let wd = world_dir.clone();
    tokio::task::spawn_blocking(move || state_bureau_sim::generate::generate(SEED, 1_200, &wd))
        .await
        .unwrap()
        .unwrap();
    let data = WorldData::load(&world_dir).unwrap();
    let states: Vec<String> = data.world.states.iter().map(|s| s.code.clone()).collect();
    let offices: Vec<String> = data
        .world
        .field_offices
        .iter()
        .map(|o| o.code.clone())
        .collect();
    let pki = pki::init(
        &dir.join("pki"),
        &pki::InitOptions {
            states: &states,
            offices: &offices,
        },
    )
    .unwrap();
    let wd = world_dir.clone();
    let b = tokio::task::spawn_blocking(move || backends::InProcess::load(&wd, 2))
        .await
        .unwrap()
        .unwrap();
    let gw = server::Gateway::start(
        data.world.clone(),
        store::open_embedded(&dir.join("data")).unwrap(),
        b.ident.clone(),
        b.criminal.clone(),
        None,
        server::ServeOptions::default(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        gw.serve(listener, server::server_tls(&pki).unwrap(), async {
            let _ = rx.await;
        }),
    );
    Served {
        endpoint,
        stop,
        task,
    }
}
