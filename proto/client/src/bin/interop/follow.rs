//! `interop responses` (a bureau's) and `interop watch` (a field office's): the
//! cursor-ordered streams, printed as they come and resumable across runs.
//!
//! The library's [`interop_client::Follower`] rides out disconnects and gateway restarts;
//! what this adds is the state file ([`CursorFile`]): the cursor is saved after each line is
//! printed, so a restart continues after the last line shown. SIGINT and SIGTERM stop between
//! lines, where what was printed is also what was recorded.

use crate::{Failure, Outcome, print_json, short, time};
use interop_client::{Client, CursorFile, Cursored, Follower, Role};
use interop_proto::v1 as pb;
use std::path::PathBuf;

fn outcome_json(cursor: u64, o: &pb::IdentOutcome) -> serde_json::Value {
    serde_json::json!({
        "cursor": cursor,
        "tcn": o.tcn,
        "jurisdiction_id": o.jurisdiction_id,
        "ori": o.ori,
        "booked_at": time(o.booked_at.as_ref()),
        "determined_at": time(o.determined_at.as_ref()),
        "hit": o.hit,
        "fin": o.fin,
        "score": o.score,
        "status": short(o.status().as_str_name(), "IMMIGRATION_STATUS_"),
        "priority_level": short(o.priority_level().as_str_name(), "PRIORITY_LEVEL_"),
        "non_criminal_priorities": o.non_criminal_priorities().map(|p| short(p.as_str_name(), "NON_CRIMINAL_PRIORITY_")).collect::<Vec<_>>(),
        "recommendation": short(o.recommendation().as_str_name(), "RECOMMENDATION_"),
        "fbi_number": o.fbi_number,
    })
}

fn notice_json(cursor: u64, n: &pb::LescNotice) -> serde_json::Value {
    serde_json::json!({
        "cursor": cursor,
        "lesc_notice": n.notice_id,
        "tcn": n.tcn,
        "state": n.state,
        "detainer_id": n.detainer_id,
        "source": short(n.source().as_str_name(), "LESC_SOURCE_"),
        "concerns": n.concerns().map(|c| short(c.as_str_name(), "LESC_CONCERN_")).collect::<Vec<_>>(),
        "noticed_at": time(n.noticed_at.as_ref()),
    })
}

fn flag_json(cursor: u64, f: &pb::ComplaintFlag) -> serde_json::Value {
    serde_json::json!({
        "cursor": cursor,
        "complaint": f.complaint_id,
        "tcn": f.tcn,
        "state": f.state,
        "detainer_id": f.detainer_id,
        "allegation": short(f.allegation().as_str_name(), "ALLEGATION_"),
        "received_on": f.received_on,
    })
}

fn flag_line(f: &pb::ComplaintFlag) -> String {
    format!(
        "{:<22} {:<25} complaint {} ({}) by the person held — review the detainer {}; no removal while it is open",
        f.received_on,
        f.tcn,
        f.complaint_id,
        short(f.allegation().as_str_name(), "ALLEGATION_"),
        f.detainer_id,
    )
}

const WATCH_HEADER: &str = "DETERMINED             TCN                       JURIS.   STATUS                 LEVEL  RECOMMENDATION";

fn outcome_line(o: &pb::IdentOutcome) -> String {
    let status = short(o.status().as_str_name(), "IMMIGRATION_STATUS_");
    let level = match o.priority_level() {
        pb::PriorityLevel::Unspecified => "-".to_string(),
        l => short(l.as_str_name(), "PRIORITY_LEVEL_"),
    };
    format!(
        "{:<22} {:<25} {:<8} {:<22} {:<6} {}",
        time(o.determined_at.as_ref()),
        o.tcn,
        o.jurisdiction_id,
        status,
        level,
        short(o.recommendation().as_str_name(), "RECOMMENDATION_"),
    )
}

fn notice_line(n: &pb::LescNotice) -> String {
    let concerns: Vec<String> = n
        .concerns()
        .map(|c| short(c.as_str_name(), "LESC_CONCERN_"))
        .collect();
    format!(
        "{:<22} {:<25} LESC notice {} ({}): {} — review the detainer {}",
        time(n.noticed_at.as_ref()),
        n.tcn,
        n.notice_id,
        short(n.source().as_str_name(), "LESC_SOURCE_"),
        concerns.join(", "),
        n.detainer_id,
    )
}

pub(crate) fn print_response(r: &pb::BureauResponse, json: bool) {
    use pb::bureau_response::Body;
    match (&r.body, json) {
        (Some(Body::CriminalHistory(c)), false) => outln!(
            "{:>8}  {}  criminal history: {}{}",
            r.cursor,
            r.tcn,
            if c.identified {
                "identified "
            } else {
                "not identified"
            },
            if c.identified {
                format!(
                    "FBI {} ({} prior arrests, {} convictions)",
                    c.fbi_number,
                    c.prior_arrests,
                    c.convictions.len()
                )
            } else {
                String::new()
            }
        ),
        (Some(Body::Immigration(i)), false) => {
            let o = i.outcome.clone().unwrap_or_default();
            outln!(
                "{:>8}  {}  identification: {} {}",
                r.cursor,
                r.tcn,
                short(o.status().as_str_name(), "IMMIGRATION_STATUS_"),
                short(o.recommendation().as_str_name(), "RECOMMENDATION_")
            )
        }
        (Some(Body::Detainer(d)), false) => outln!(
            "{:>8}  {}  detainer {} from {}: hold until {}{}",
            r.cursor,
            r.tcn,
            d.detainer_id,
            d.field_office,
            time(d.hold_until.as_ref()),
            if d.operative_on_conviction {
                " (operative on conviction)"
            } else {
                ""
            }
        ),
        (Some(Body::DetainerLifted(l)), false) => outln!(
            "{:>8}  {}  detainer {} lifted at {}",
            r.cursor,
            r.tcn,
            l.detainer_id,
            time(l.lifted_at.as_ref())
        ),
        (Some(Body::ActivationNotice(n)), false) => outln!(
            "{:>8}  notice of {}: {} ({}) is activated on {} (bookings from then on are checked against IDENT)",
            r.cursor,
            n.notice_on,
            n.jurisdiction_id,
            n.jurisdiction_name,
            n.activate_on
        ),
        (Some(Body::DetainerOperative(o)), false) => outln!(
            "{:>8}  {}  detainer {} operative: convicted on {}",
            r.cursor,
            r.tcn,
            o.detainer_id,
            o.convicted_on
        ),
        (None, false) => outln!("{:>8}  {}  (empty response)", r.cursor, r.tcn),
        (body, true) => {
            let body = match body {
                Some(Body::CriminalHistory(c)) => serde_json::json!({"criminal_history": {
                    "identified": c.identified, "fbi_number": c.fbi_number,
                    "prior_arrests": c.prior_arrests, "convictions": c.convictions.len()}}),
                Some(Body::Immigration(i)) => serde_json::json!({"immigration":
                    outcome_json(r.cursor, &i.outcome.clone().unwrap_or_default())}),
                Some(Body::Detainer(d)) => serde_json::json!({"detainer": {
                    "detainer_id": d.detainer_id, "field_office": d.field_office,
                    "hold_until": time(d.hold_until.as_ref()),
                    "operative_on_conviction": d.operative_on_conviction}}),
                Some(Body::DetainerLifted(l)) => serde_json::json!({"detainer_lifted": {
                    "detainer_id": l.detainer_id, "lifted_at": time(l.lifted_at.as_ref())}}),
                Some(Body::ActivationNotice(n)) => serde_json::json!({"activation_notice": {
                    "jurisdiction_id": n.jurisdiction_id, "jurisdiction_name": n.jurisdiction_name,
                    "notice_on": n.notice_on, "activate_on": n.activate_on}}),
                Some(Body::DetainerOperative(o)) => serde_json::json!({"detainer_operative": {
                    "detainer_id": o.detainer_id, "convicted_on": o.convicted_on}}),
                None => serde_json::json!({}),
            };
            print_json(&serde_json::json!({"cursor": r.cursor, "tcn": r.tcn, "body": body}));
        }
    }
}

/// Resolves where a follower starts: an explicit cursor, else the state file's.
fn start_cursor(
    state_file: Option<PathBuf>,
    role: &Role,
    after: Option<u64>,
) -> Result<(Option<CursorFile>, Option<u64>), Failure> {
    match state_file {
        Some(path) => {
            let (f, saved) = CursorFile::open(path, role)?;
            Ok((Some(f), after.or(saved)))
        }
        None => Ok((None, after)),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Hands each message of `f` to `each` until the stream ends (a stream that does not follow)
/// or SIGINT/SIGTERM arrives. Stopping is only ever between messages, where what was printed
/// is also what was recorded; the rest comes on the next run.
async fn until_stopped<T: Cursored>(
    mut f: Follower<T>,
    mut each: impl AsyncFnMut(T) -> Outcome,
) -> Outcome {
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            n = f.next() => n?,
            _ = &mut stop => return Ok(()),
        };
        let Some(m) = next else { return Ok(()) };
        each(m).await?;
    }
}

pub(crate) async fn responses(
    client: &Client,
    role: &Role,
    follow: bool,
    after: Option<u64>,
    state_file: Option<PathBuf>,
    json: bool,
) -> Outcome {
    if !matches!(role, Role::Bureau(_)) {
        return Err(Failure::usage("responses is for bureaus: --as bureau/XX"));
    }
    let (state, start) = start_cursor(state_file, role, after)?;
    let f = client.follow_responses(start, follow);
    until_stopped(f, async |r| {
        print_response(&r, json);
        if let Some(s) = &state {
            s.save(r.cursor)?;
        }
        Ok(())
    })
    .await
}

pub(crate) async fn watch(
    client: &Client,
    role: &Role,
    state_file: Option<PathBuf>,
    ack: bool,
    once: bool,
    after: Option<u64>,
    json: bool,
) -> Outcome {
    let Role::FieldOffice(office) = role else {
        return Err(Failure::usage(
            "watch is for field offices: --as field-office/XXX",
        ));
    };
    let path =
        state_file.unwrap_or_else(|| PathBuf::from(format!("interop-watch-{office}.cursor")));
    let (state, start) = start_cursor(Some(path), role, after)?;
    let state = state.expect("a state file was given");
    let f = client.subscription(start, !once);
    if !json {
        outln!("{WATCH_HEADER}");
    }
    until_stopped(f, async |n| {
        let line = match (&n.lesc_notice, json) {
            _ if let Some(flag) = &n.complaint_flag => {
                if json {
                    flag_json(n.cursor, flag).to_string()
                } else {
                    flag_line(flag)
                }
            }
            (Some(notice), true) => notice_json(n.cursor, notice).to_string(),
            (Some(notice), false) => notice_line(notice),
            (None, true) => {
                outcome_json(n.cursor, &n.outcome.clone().unwrap_or_default()).to_string()
            }
            (None, false) => outcome_line(&n.outcome.clone().unwrap_or_default()),
        };
        outln!("{line}");
        state.save(n.cursor)?;
        if ack {
            client.ack(n.cursor).await?;
        }
        Ok(())
    })
    .await
}
