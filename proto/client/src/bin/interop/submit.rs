//! `interop submit` and `interop status`: a bureau's bookings, from JSON files
//! ([`interop_client::booking_json`]), one at a time or many over one stream.
//!
//! A file of bookings is read and parsed a line at a time as the stream has room for them
//! (never held in memory); a line that is not a valid booking is reported by its number and
//! never sent, and the rest still go. The exit code says the worst that happened to any line.

use crate::{Failure, Outcome, UNAVAILABLE, exit_for, print_json, short, time};
use interop_client::booking_json::BookingJson;
use interop_client::{Client, describe_status};
use interop_proto::v1 as pb;
use std::io::BufRead;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `interop status TCN`: where a submission stands.
pub(crate) async fn status(client: &Client, tcn: &str, json: bool) -> Outcome {
    let st = client.status(tcn).await?;
    let receipt = st.receipt.clone().unwrap_or_default();
    if json {
        print_json(&serde_json::json!({
            "tcn": st.tcn,
            "stage": short(st.stage().as_str_name(), "STAGE_"),
            "receipt_id": receipt.receipt_id,
            "accepted_at": time(receipt.accepted_at.as_ref()),
        }));
    } else {
        outln!(
            "{}: {} (receipt {}, accepted {})",
            st.tcn,
            short(st.stage().as_str_name(), "STAGE_"),
            receipt.receipt_id,
            time(receipt.accepted_at.as_ref())
        );
    }
    Ok(())
}

fn read_booking(file: &Path) -> Result<pb::Submission, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    let base = file.parent().unwrap_or(Path::new("."));
    BookingJson::parse(&text)
        .and_then(|b| b.to_pb(base))
        .map_err(|e| Failure::refused(format!("{}: {e:#}", file.display())))
}

fn refusal(tcn: &str, s: &tonic::Status) -> Failure {
    let violations = interop_client::field_violations(s);
    let code = interop_client::code_name(s.code());
    let mut msg = if violations.is_empty() {
        format!("{tcn} refused: {code}: {}", s.message())
    } else {
        format!("{tcn} refused: {code}, {} problem(s):", violations.len())
    };
    for (field, why) in violations {
        msg.push_str(&format!("\n  {field}: {why}"));
    }
    Failure {
        exit: exit_for(s.code()),
        message: msg,
    }
}

fn receipt_json(r: &pb::Receipt) -> serde_json::Value {
    serde_json::json!({
        "tcn": r.tcn,
        "receipt_id": r.receipt_id,
        "accepted_at": time(r.accepted_at.as_ref()),
        "duplicate": r.duplicate,
    })
}

pub(crate) async fn submit_one(
    client: &Client,
    file: &Path,
    wait: Option<Duration>,
    json: bool,
) -> Outcome {
    let sub = read_booking(file)?;
    let tcn = sub.tcn.clone();
    let r = client.submit(sub).await.map_err(|s| refusal(&tcn, &s))?;
    if json {
        print_json(&receipt_json(&r));
    } else {
        outln!(
            "receipt {} for {} accepted {}{}",
            r.receipt_id,
            r.tcn,
            time(r.accepted_at.as_ref()),
            if r.duplicate {
                " (already received: the original receipt)"
            } else {
                ""
            }
        );
    }
    if let Some(d) = wait {
        for resp in client.wait_for_responses(&tcn, d).await? {
            crate::follow::print_response(&resp, json);
        }
    }
    Ok(())
}

pub(crate) async fn submit_stream(
    client: &Client,
    file: &Path,
    window: usize,
    json: bool,
) -> Outcome {
    let reader: Box<dyn BufRead + Send> = if file == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
        Box::new(std::io::BufReader::new(f))
    };
    // The progress bar's length: lines counted in fixed-size chunks, so a large file is never
    // held in memory (its bookings are parsed one at a time as they are sent).
    let total_hint = if file == Path::new("-") {
        None
    } else {
        count_lines(file).ok()
    };
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    // Bookings are parsed as they are sent; a line that does not parse is reported by its
    // number and never sent. `lines_of[i]` is the line of the i-th booking sent.
    let lines_of = Arc::new(Mutex::new(Vec::<usize>::new()));
    let bad_lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (lines, bad) = (lines_of.clone(), bad_lines.clone());
    let input = reader.lines().enumerate().filter_map(move |(i, line)| {
        let n = i + 1;
        let parsed = line.map_err(anyhow::Error::from).and_then(|l| {
            if l.trim().is_empty() {
                Ok(None)
            } else {
                BookingJson::parse(&l)
                    .and_then(|b| b.to_pb(&base))
                    .map(Some)
            }
        });
        match parsed {
            Ok(Some(s)) => {
                lines.lock().unwrap().push(n);
                Some(s)
            }
            Ok(None) => None,
            Err(e) => {
                bad.lock().unwrap().push(format!("line {n}: {e:#}"));
                None
            }
        }
    });
    let progress = indicatif::ProgressBar::with_draw_target(
        total_hint,
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {pos}/{len} submitted [{elapsed_precise}] {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut answers = client.submit_many(input, window);
    let (mut receipted, mut duplicates, mut refused, mut unavailable) = (0u64, 0u64, 0u64, 0u64);
    let mut stream_error = None;
    while let Some(a) = answers.recv().await {
        let a = match a {
            Ok(a) => a,
            Err(s) => {
                stream_error = Some(s);
                break;
            }
        };
        progress.inc(1);
        let line = lines_of.lock().unwrap().get(a.index).copied().unwrap_or(0);
        match &a.result {
            Ok(r) => {
                receipted += 1;
                duplicates += r.duplicate as u64;
                if json {
                    print_json(&receipt_json(r));
                }
            }
            Err(s) => {
                if exit_for(s.code()) == UNAVAILABLE {
                    unavailable += 1;
                } else {
                    refused += 1;
                }
                if json {
                    print_json(&serde_json::json!({"tcn": a.tcn, "line": line,
                        "code": interop_client::code_name(s.code()), "error": s.message()}));
                } else {
                    progress.suspend(|| {
                        eprintln!("line {line}: {} refused: {}", a.tcn, describe_status(s))
                    });
                }
            }
        }
    }
    progress.finish_and_clear();
    let bad = bad_lines.lock().unwrap().clone();
    for b in &bad {
        eprintln!("{b}");
    }
    let secs = started.elapsed().as_secs_f64();
    let sent = receipted + refused + unavailable;
    eprintln!(
        "{sent} submitted in {secs:.1} s ({:.0}/s): {receipted} receipted ({duplicates} already \
         received), {refused} refused, {unavailable} unavailable; {} lines not valid bookings",
        sent as f64 / secs.max(1e-9),
        bad.len()
    );
    if let Some(s) = stream_error {
        return Err(Failure::from(s));
    }
    if unavailable > 0 {
        return Err(Failure {
            exit: UNAVAILABLE,
            message: format!("{unavailable} submissions were not accepted: gateway unavailable"),
        });
    }
    if refused > 0 || !bad.is_empty() {
        return Err(Failure::refused(format!(
            "{} bookings refused or not valid",
            refused + bad.len() as u64
        )));
    }
    Ok(())
}

fn count_lines(file: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(file)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(n),
            k => n += buf[..k].iter().filter(|&&c| c == b'\n').count() as u64,
        }
    }
}
