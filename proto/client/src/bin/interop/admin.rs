//! `interop admin ...`: every administrative command, as the admin identity (the default
//! role here). Policy and states' choices not to receive results, jurisdictions and field offices, counters and the monthly
//! statistics, the disclosure audit, certificate revocation and reloading, and taking a
//! subject out of the IDENT gallery.
//!
//! Output is what an administrator pipes into other tools: aligned text by default, `--json`
//! lines where a script reads it, CSV for the audit (and `stats --format csv`). The monthly
//! table comes from the library's renderer, so it reads the same wherever it is printed.

use crate::{Failure, Outcome, print_json};
use clap::{Subcommand, ValueEnum};
use interop_client::Client;
use interop_client::stats::{StatsFormat, render_monthly_stats};
use interop_proto::v1 as pb;

#[derive(Subcommand)]
pub(crate) enum AdminCmd {
    /// A jurisdiction's policy.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Set or lift a state's choice not to receive the identifications (not an opt-out of the
    /// program: the field office still gets them).
    #[command(alias = "state-opt-out")]
    StateDeclinesResults {
        state: String,
        declines_results: YesNo,
    },
    /// Jurisdictions and their policies.
    Jurisdictions {
        /// Only this state's.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Field offices and the states they cover.
    Offices {
        #[arg(long)]
        json: bool,
    },
    /// Take a subject out of the gateway's IDENT gallery (also behind --ident-shards, where
    /// every replica of its shard must answer; shard processes serve gateways only, so the
    /// change goes through the gateway, which records it). No later search finds it.
    RemoveSubject { subject_id: u64 },
    /// The gateway's counters, or with --month the monthly statistics per jurisdiction,
    /// state and nation.
    Stats {
        /// YYYY-MM: monthly statistics by month of booking.
        #[arg(long)]
        month: Option<String>,
        /// With --month: only this state's rows (and the nation's).
        #[arg(long)]
        state: Option<String>,
        /// An aligned table, CSV, or one JSON document.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The same as --format json.
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// The profiling review of a federal fiscal quarter (FY2011Q3, April-June 2011, is the
    /// first), or of a span of months, computed now: the jurisdictions and groups flagged
    /// against their arrest-rate data, most significant first, with the figures behind each.
    Review {
        /// FYyyyyQn, e.g. FY2012Q1 (October-December 2011).
        #[arg(long, required_unless_present = "from")]
        quarter: Option<String>,
        /// YYYY-MM: review these months instead (with --to).
        #[arg(long, requires = "to", conflicts_with = "quarter")]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The quarterly assessments the gateway ran on schedule and shares with DOJ: without a
    /// quarter, the list; with one, the latest revision (or --revision), its flags and the
    /// in-depth analysis of last quarter's outliers. --out and --html write the DOJ export
    /// (JSON, and a self-contained HTML page).
    Assessment {
        /// FYyyyyQn, e.g. FY2011Q3.
        quarter: Option<String>,
        #[arg(long, default_value_t = 0)]
        revision: u32,
        #[arg(long)]
        json: bool,
        /// Write the assessment as JSON to this file.
        #[arg(long, requires = "quarter")]
        out: Option<std::path::PathBuf>,
        /// Write the assessment as a self-contained HTML page to this file.
        #[arg(long, requires = "quarter")]
        html: Option<std::path::PathBuf>,
    },
    /// Civil-rights complaints in filing order: id, stage, outcome, jurisdiction, booking.
    Complaints {
        /// Only those filed after this cursor.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long)]
        json: bool,
    },
    /// The disclosure audit: who received which TCN's result, when, through which RPC (all
    /// pages, oldest first; CSV).
    Disclosures {
        /// Only this TCN's.
        #[arg(long, default_value = "")]
        tcn: String,
        /// Only this recipient's: a SPIFFE id, e.g. spiffe://interop.local/bureau/TX.
        #[arg(long, default_value = "")]
        recipient: String,
    },
    /// Revoke a client certificate by serial number (hex; colons and case ignored), from its
    /// next call on.
    Revoke {
        #[arg(long)]
        serial: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List the revoked certificates: serial, when, why (tab-separated).
    Revoked,
    /// Make the gateway re-read its certificate, key and client CA bundle (as SIGHUP does).
    Reload,
}

/// How `stats` prints.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum PolicyCmd {
    Get {
        jurisdiction: String,
        #[arg(long)]
        json: bool,
    },
    /// Change the given fields; the others stay as they are.
    Set {
        jurisdiction: String,
        /// YYYY-MM-DD, or "none" to deactivate. A new date needs --notice-on.
        #[arg(long)]
        activated_on: Option<String>,
        /// YYYY-MM-DD: when the state and local governments were given notice of the
        /// activation, at least 30 days before --activated-on.
        #[arg(long)]
        notice_on: Option<String>,
        #[arg(long)]
        receives_results: Option<YesNo>,
        #[arg(long)]
        can_receive_electronically: Option<YesNo>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum YesNo {
    Yes,
    No,
}

impl YesNo {
    fn get(self) -> bool {
        matches!(self, YesNo::Yes)
    }
}

pub(crate) async fn admin(client: &Client, cmd: AdminCmd) -> Outcome {
    match cmd {
        AdminCmd::Policy {
            cmd: PolicyCmd::Get { jurisdiction, json },
        } => print_policy(&client.get_policy(&jurisdiction).await?, json),
        AdminCmd::Policy {
            cmd:
                PolicyCmd::Set {
                    jurisdiction,
                    activated_on,
                    notice_on,
                    receives_results,
                    can_receive_electronically,
                    json,
                },
        } => {
            if activated_on.is_none()
                && receives_results.is_none()
                && can_receive_electronically.is_none()
            {
                return Err(Failure::usage(
                    "nothing to change: give --activated-on, --receives-results or \
                     --can-receive-electronically",
                ));
            }
            let p = client
                .set_policy(pb::SetPolicyRequest {
                    jurisdiction_id: jurisdiction,
                    activated_on: activated_on.map(|d| if d == "none" { String::new() } else { d }),
                    receives_results: receives_results.map(YesNo::get),
                    can_receive_electronically: can_receive_electronically.map(YesNo::get),
                    notice_on: notice_on.unwrap_or_default(),
                })
                .await?;
            print_policy(&p, json);
        }
        AdminCmd::StateDeclinesResults {
            state,
            declines_results,
        } => {
            let p = client
                .set_state_policy(&state, declines_results.get())
                .await?;
            outln!(
                "{}: {}",
                p.state,
                if p.declines_results {
                    "declines results (its bureaus receive no identifications)"
                } else {
                    "receives results"
                }
            );
        }
        AdminCmd::Jurisdictions { state, json } => {
            for p in client.list_jurisdictions(state.as_deref()).await? {
                if json {
                    print_json(&policy_json(&p));
                } else {
                    outln!("{}", policy_line(&p));
                }
            }
        }
        AdminCmd::RemoveSubject { subject_id } => {
            let size = client.remove_subject(subject_id).await?;
            // Behind `--ident-shards` the size is the shard's that held the subject.
            outln!("subject {subject_id} removed; {size} left in the gallery that held it");
        }
        AdminCmd::Offices { json } => {
            for o in client.list_field_offices().await? {
                if json {
                    print_json(&serde_json::json!({"code": o.code, "name": o.name,
                        "states": o.states, "jurisdictions": o.jurisdictions}));
                } else {
                    outln!(
                        "{:<4} {:<28} {:>4} jurisdictions  {}",
                        o.code,
                        o.name,
                        o.jurisdictions,
                        o.states.join(" ")
                    );
                }
            }
        }
        AdminCmd::Stats {
            month,
            state,
            format,
            json,
        } => {
            let format = if json { Format::Json } else { format };
            stats(client, month, state, format).await?;
        }
        AdminCmd::Disclosures { tcn, recipient } => disclosures(client, tcn, recipient).await?,
        AdminCmd::Review {
            quarter,
            from,
            to,
            json,
        } => {
            let r = client
                .quarterly_review(pb::QuarterlyReviewRequest {
                    quarter: quarter.unwrap_or_default(),
                    from_month: from.unwrap_or_default(),
                    to_month: to.unwrap_or_default(),
                })
                .await?;
            review(&r, json);
        }
        AdminCmd::Assessment {
            quarter,
            revision,
            json,
            out,
            html,
        } => assessment(client, quarter, revision, json, html, out).await?,
        AdminCmd::Complaints { after, json } => complaints(client, after, json).await?,
        AdminCmd::Revoke { serial, reason } => {
            let r = client.revoke_certificate(&serial, &reason).await?;
            outln!("revoked {} ({})", r.serial, r.reason);
        }
        AdminCmd::Revoked => {
            for r in client.list_revoked().await? {
                outln!("{}\t{}\t{}", r.serial, rfc3339(r.revoked_at), r.reason);
            }
        }
        AdminCmd::Reload => {
            let r = client.reload_certificates().await?;
            outln!(
                "reloaded: server certificate serial {}, {} client CA certificate(s)",
                r.server_serial,
                r.client_cas
            );
        }
    }
    Ok(())
}

/// Without a month the gateway's counters; with one the monthly statistics table
/// ([`interop_client::stats`]).
async fn stats(
    client: &Client,
    month: Option<String>,
    state: Option<String>,
    format: Format,
) -> Outcome {
    let Some(month) = month else {
        let c = client.counters().await?;
        match format {
            Format::Json => print_json(&serde_json::to_value(&c).unwrap_or_default()),
            Format::Csv => {
                outln!("counter,value");
                for (k, v) in c {
                    outln!("{k},{v}");
                }
            }
            Format::Table => {
                for (k, v) in c {
                    outln!("{k:<40} {v:>12}");
                }
            }
        }
        return Ok(());
    };
    let m = client
        .monthly_stats(pb::GetMonthlyStatsRequest {
            month,
            state: state.unwrap_or_default(),
        })
        .await?;
    let format = match format {
        Format::Table => StatsFormat::Table,
        Format::Csv => StatsFormat::Csv,
        Format::Json => StatsFormat::Json,
    };
    // The rendering ends with a newline; `outln!` adds one.
    let text = render_monthly_stats(&m, format);
    outln!("{}", text.trim_end_matches('\n'));
    Ok(())
}

fn review(r: &pb::OutlierReview, json: bool) {
    if json {
        print_json(&interop_client::assessment::review_json(r));
        return;
    }
    outln!(
        "profiling review {}..{}: {} identifications, {} tests ({} powered), false-discovery rate {}, {} flag(s)",
        r.from_month,
        r.to_month,
        r.identifications,
        r.tests,
        r.powered_tests,
        r.false_discovery_rate,
        r.flags.len()
    );
    for f in &r.flags {
        outln!(
            "{:<8} {:<3} {:<24} {:>5}/{:<5} minor traffic {:>5.1}% (arrest data {:.1}%, expected {:.1}%)  p={:.2e}",
            f.jurisdiction_id,
            f.state,
            f.group,
            f.count,
            f.trials,
            f.rate * 100.0,
            f.arrest_rate * 100.0,
            f.expected_rate * 100.0,
            f.p_value
        );
    }
    for c in &r.complained_of {
        outln!(
            "{:<8} {:<3} {} complaint(s) of profiling{}",
            c.jurisdiction_id,
            c.state,
            c.profiling_complaints,
            if c.flagged { ", flagged above" } else { "" }
        );
    }
}

/// A stored quarterly assessment (or, without a quarter, the list of them); with `--html`
/// and `--out`, the DOJ export written to files.
async fn assessment(
    client: &Client,
    quarter: Option<String>,
    revision: u32,
    json: bool,
    html: Option<std::path::PathBuf>,
    out: Option<std::path::PathBuf>,
) -> Outcome {
    let Some(quarter) = quarter else {
        let l = client.list_assessments().await?;
        if json {
            print_json(&serde_json::json!(
                l.assessments
                    .iter()
                    .map(|a| serde_json::json!({
                "quarter": a.quarter, "revision": a.revision, "data_through": a.data_through,
                "tests": a.tests, "flags": a.flags}))
                    .collect::<Vec<_>>()
            ));
        } else {
            for a in &l.assessments {
                outln!(
                    "{} revision {:<3} data through {}  {} tests, {} flag(s)",
                    a.quarter,
                    a.revision,
                    a.data_through,
                    a.tests,
                    a.flags
                );
            }
        }
        return Ok(());
    };
    let a = client
        .get_assessment(pb::GetAssessmentRequest { quarter, revision })
        .await?;
    let doc = interop_client::assessment::assessment_json(&a);
    let write = |path: &std::path::Path, bytes: Vec<u8>| {
        std::fs::write(path, bytes)
            .map_err(|e| Failure::usage(format!("writing {}: {e}", path.display())))
    };
    if let Some(path) = &out {
        write(path, serde_json::to_vec_pretty(&doc).unwrap_or_default())?;
    }
    if let Some(path) = &html {
        write(
            path,
            interop_client::assessment::assessment_html(&a).into_bytes(),
        )?;
    }
    if json {
        print_json(&doc);
        return Ok(());
    }
    outln!(
        "{} revision {} (data through {})",
        a.quarter,
        a.revision,
        a.data_through
    );
    if let Some(r) = &a.review {
        review(r, false);
    }
    for d in &a.in_depth {
        outln!(
            "in depth: {:<8} {:<24} last quarter p={:.2e}; now {}/{} (expected {:.1}%) p={:.2e}  {}",
            d.jurisdiction_id,
            d.group,
            d.previous_p_value,
            d.count,
            d.trials,
            d.expected_rate * 100.0,
            d.p_value,
            if d.persists {
                "persists"
            } else {
                "does not persist"
            }
        );
    }
    Ok(())
}

/// Every complaint filed after `after`, 1,000 at a time.
async fn complaints(client: &Client, mut after: u64, json: bool) -> Outcome {
    loop {
        let page = client
            .list_complaints(pb::ListComplaintsRequest {
                after_cursor: after,
                limit: 1000,
            })
            .await?;
        if page.complaints.is_empty() {
            return Ok(());
        }
        for l in &page.complaints {
            after = l.cursor;
            let Some(c) = &l.complaint else { continue };
            let f = c.filing.clone().unwrap_or_default();
            let stage = crate::short(c.stage().as_str_name(), "COMPLAINT_STAGE_");
            let outcome = crate::short(c.outcome().as_str_name(), "COMPLAINT_OUTCOME_");
            let since = c.steps.last().map(|s| s.on.as_str()).unwrap_or("");
            if json {
                print_json(
                    &serde_json::json!({"cursor": l.cursor, "complaint_id": c.complaint_id,
                    "stage": stage, "since": since, "outcome": outcome,
                    "jurisdiction_id": c.jurisdiction_id, "state": f.state, "tcn": f.tcn,
                    "allegation": crate::short(f.allegation().as_str_name(), "ALLEGATION_"),
                    "detainer_flagged": c.detainer_flagged}),
                );
            } else {
                outln!(
                    "{:<24} {:<20} {:<10} {:<18} {:<8} {}",
                    c.complaint_id,
                    stage,
                    since,
                    outcome,
                    c.jurisdiction_id,
                    f.tcn
                );
            }
        }
    }
}

/// The whole audit (filtered), a page of 1,000 at a time, printed as each page comes.
async fn disclosures(client: &Client, tcn: String, recipient: String) -> Outcome {
    outln!("seq,disclosed_at,recipient,certificate_serial,rpc,state,tcn,kind,cursor");
    let mut page_token = String::new();
    loop {
        let page = client
            .list_disclosures(pb::ListDisclosuresRequest {
                tcn: tcn.clone(),
                recipient: recipient.clone(),
                page_size: 1000,
                page_token,
            })
            .await?;
        for d in &page.disclosures {
            outln!(
                "{},{},{},{},{},{},{},{},{}",
                d.seq,
                rfc3339(d.disclosed_at),
                d.recipient,
                d.certificate_serial,
                d.rpc,
                d.state,
                d.tcn,
                d.kind().as_str_name(),
                d.cursor
            );
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

/// An audit or revocation time as RFC 3339 (`2011-06-01T10:00:00.5+00:00`), empty if unset.
fn rfc3339(t: Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

fn policy_json(p: &pb::JurisdictionPolicy) -> serde_json::Value {
    serde_json::json!({
        "jurisdiction_id": p.jurisdiction_id, "name": p.name, "state": p.state,
        "field_office": p.field_office, "activated_on": p.activated_on,
        "receives_results": p.receives_results,
        "can_receive_electronically": p.can_receive_electronically,
        "state_declines_results": p.state_declines_results,
        "effective_receives_results": p.effective_receives_results,
    })
}

fn policy_line(p: &pb::JurisdictionPolicy) -> String {
    let yn = |b: bool| if b { "yes" } else { "no" };
    format!(
        "{:<8} {:<30} {:<4} activated {:<10}  receives results {:<3} (electronic {:<3}, state \
         declines {:<3}) => bureau gets immigration responses: {}",
        p.jurisdiction_id,
        p.name,
        p.field_office,
        if p.activated_on.is_empty() {
            "never"
        } else {
            &p.activated_on
        },
        yn(p.receives_results),
        yn(p.can_receive_electronically),
        yn(p.state_declines_results),
        yn(p.effective_receives_results)
    )
}

fn print_policy(p: &pb::JurisdictionPolicy, json: bool) {
    if json {
        print_json(&policy_json(p));
    } else {
        outln!("{}", policy_line(p));
    }
}
