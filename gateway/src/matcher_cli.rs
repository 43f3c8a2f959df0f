//! `interop-matcher`: one shard of a world's gallery as its own process, serving
//! `interop.v1.MatcherService` over mutual TLS, for a gateway started with `--ident-shards`.

use crate::remote::{self, Shard};
use crate::{pki, server, world};
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "interop-matcher",
    version,
    about = "A matcher shard as its own process"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Gallery {
    /// DHS IDENT (immigration encounters).
    Ident,
    /// FBI criminal-history prints.
    Fbi,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve shard i of N of a gallery.
    Serve {
        #[arg(long, default_value = "127.0.0.1:7001")]
        listen: SocketAddr,
        /// PKI directory (server certificate; callers need the admin certificate).
        #[arg(long)]
        pki: PathBuf,
        /// World directory holding the gallery files.
        #[arg(long)]
        world: PathBuf,
        #[arg(long, value_enum, default_value = "ident")]
        gallery: Gallery,
        /// This process's shard: i/N holds the subjects whose id is i modulo N.
        #[arg(long, default_value = "0/1")]
        shard: Shard,
        /// Threads per search.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// The gateway this shard follows (as the PKI's admin), e.g. https://127.0.0.1:50051:
        /// its revocation list (a certificate revoked there is refused here too) and, for the
        /// IDENT gallery, the gallery changes recorded there (enrolments and removals made at
        /// the gateway, read before serving and then every interval, so this shard has the ones
        /// it missed while it was down or unreachable).
        #[arg(long, alias = "revocations-from")]
        gateway: Option<String>,
        /// How often to read the gateway's revocation list and gallery changes.
        #[arg(long, default_value_t = 10, alias = "revocations-every-secs")]
        follow_every_secs: u64,
        /// Put the hit/no-hit threshold where the whole gallery, all N shards together, has
        /// this false-positive identification rate (e.g. 0.001): this shard is calibrated for
        /// F / N from its own subjects at start (the log says the threshold and whether the
        /// searches resolve the rate). Default: the matcher's fixed threshold (0.6). Give
        /// every shard the same F.
        #[arg(long, value_parser = fpir_in_range)]
        fpir: Option<f64>,
        /// With --fpir: how many of the shard's subjects to search (with themselves left out)
        /// to set the threshold; N / F of them resolve the rate.
        #[arg(long, default_value_t = 2_000, requires = "fpir")]
        calibration_searches: usize,
    },
}

/// A false-positive identification rate: a number above 0 and below 1.
fn fpir_in_range(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if f > 0.0 && f < 1.0 {
        Ok(f)
    } else {
        Err(format!(
            "{f} is not a rate above 0 and below 1 (e.g. 0.001)"
        ))
    }
}

/// Runs `interop-matcher` with the process's arguments.
pub fn main() -> std::process::ExitCode {
    main_from(std::env::args_os())
}

/// Runs `interop-matcher` with `args` (the first is the program's name).
pub fn main_from(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> std::process::ExitCode {
    let cli = Cli::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    crate::cli::block_on_to_exit(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cmd::Serve {
        listen,
        pki,
        world: dir,
        gallery,
        shard,
        threads,
        gateway,
        follow_every_secs,
        fpir,
        calibration_searches,
    } = cli.cmd;
    let file = match gallery {
        Gallery::Ident => world::IDENT_GALLERY_FILE,
        Gallery::Fbi => world::FBI_GALLERY_FILE,
    };
    let tls = server::tonic_server_tls(&pki::PkiDir(pki.clone()))?;
    let d = dir.clone();
    let matcher =
        tokio::task::spawn_blocking(move || remote::load_shard(&d, file, shard, threads)).await??;
    tracing::info!(
        shard = %shard,
        subjects = matcher.len(),
        "shard loaded"
    );
    if let Some(fpir) = fpir {
        let m = matcher.clone();
        let cal = tokio::task::spawn_blocking(move || {
            remote::calibrate_shard(m.as_ref(), fpir, shard, calibration_searches)
        })
        .await?
        .map_err(|e| anyhow::anyhow!("--fpir: {e}"))?;
        tracing::info!(
            gallery_fpir = fpir,
            shards = shard.count,
            "--fpir: this shard's share"
        );
        crate::backends::log_calibration(&cal, "--fpir");
    }
    let log = std::sync::Arc::new(crate::gallery::GalleryLog::new(matcher.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let revocations = crate::revocation::Revocations::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    match gateway {
        Some(gateway) => {
            let every = std::time::Duration::from_secs(follow_every_secs.max(1));
            let admin = interop_client::ClientConfig::from_pki_dir(
                gateway,
                &pki,
                &interop_client::Role::Admin,
            )?
            .call_timeout(every.max(std::time::Duration::from_secs(10)))
            // Each interval is the next try: a start before the gateway's is not held up.
            .retry(interop_client::RetryPolicy::none())
            .connect_lazy()?;
            tokio::spawn(remote::follow_revocations(
                admin.clone(),
                revocations.clone(),
                every,
                stop_rx.clone(),
            ));
            // The gateway records the IDENT gallery's changes only: an FBI shard follows its
            // revocations, never those changes (they would be another gallery's ids).
            if matches!(gallery, Gallery::Ident) {
                // The changes made at the gateway while this shard was down, before it serves.
                // If the gateway cannot be reached, serve what the world's gallery holds and
                // keep trying: the gateway refuses answers naming a subject it removed.
                let known = match remote::pull_changes(&admin, &log, shard, 0).await {
                    Ok((version, made)) => {
                        tracing::info!(
                            changes = made,
                            "gallery changes recorded at the gateway made before serving"
                        );
                        version
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the gateway's gallery changes before serving; serving the world's gallery and trying again every interval");
                        0
                    }
                };
                tokio::spawn(remote::follow_gallery(
                    admin,
                    log.clone(),
                    shard,
                    known,
                    every,
                    stop_rx,
                ));
            }
        }
        None => tracing::warn!(
            "no --gateway: certificates revoked at the gateway are not refused here, and enrolments and removals made at the gateway while this shard was down or unreachable are not made here"
        ),
    }
    let r = remote::serve_matcher(matcher, shard, log, listener, tls, revocations, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    let _ = stop_tx.send(true);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fpir_is_a_rate_and_calibration_searches_need_it() {
        let args = ["m", "serve", "--pki", "p", "--world", "w", "--shard", "1/2"];
        let parse = |extra: &[&str]| Cli::try_parse_from(args.iter().chain(extra));
        let Cmd::Serve {
            fpir,
            calibration_searches,
            ..
        } = parse(&["--fpir", "0.001"]).unwrap().cmd;
        assert_eq!((fpir, calibration_searches), (Some(0.001), 2_000));
        for bad in ["0", "1", "-0.1", "x"] {
            let e = parse(&[&format!("--fpir={bad}")]).err().expect("refused");
            assert!(e.to_string().contains("--fpir"), "{e}");
        }
        let e = parse(&["--calibration-searches", "10"])
            .err()
            .expect("refused without --fpir");
        assert!(e.to_string().contains("--fpir"), "{e}");
    }
}
