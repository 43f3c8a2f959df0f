//! A bureau's bookings: [`Client::submit`] one, [`Client::submit_many`] a bulk stream,
//! [`Client::status`] and [`Client::wait_for_responses`] to see where one stands.
//!
//! A receipt means the gateway holds the booking durably; a booking is identified by its TCN,
//! so sending it again (after a lost answer, or a stream that broke) returns the original
//! receipt rather than a second submission. That is what lets the bulk stream be simple about
//! failure: it keeps a bounded window of unanswered submissions (flow control), and when the
//! stream breaks it re-opens it and sends the unanswered ones again; a submission the gateway
//! shed (`RESOURCE_EXHAUSTED`) waits out a backoff and goes again on the same stream.

use crate::config::Client;
use crate::retry::{retryable, stream_retryable};
use interop_proto::v1 as pb;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Code, Status};

/// The outcome of one submission of a bulk stream.
#[derive(Clone, Debug)]
pub struct Submitted {
    /// Position in the caller's sequence, from 0.
    pub index: usize,
    pub tcn: String,
    /// The receipt, or the gateway's refusal (a refusal never retried: `UNAVAILABLE` and
    /// `RESOURCE_EXHAUSTED` are retried within the policy before they are reported).
    pub result: Result<pb::Receipt, Status>,
}

impl Client {
    /// Submits one booking and returns its receipt once the gateway holds it durably.
    /// Safe to repeat: the same TCN with the same content returns the original receipt.
    pub async fn submit(&self, s: pb::Submission) -> Result<pb::Receipt, Status> {
        self.unary(Client::submission_service, s, |mut svc, r| async move {
            svc.submit(r).await
        })
        .await
    }

    /// Where a submission stands (only the bureau that sent it can read it).
    pub async fn status(&self, tcn: &str) -> Result<pb::SubmissionStatus, Status> {
        let req = pb::GetStatusRequest { tcn: tcn.into() };
        self.unary(Client::submission_service, req, |mut svc, r| async move {
            svc.get_status(r).await
        })
        .await
    }

    /// Submits many bookings over one `SubmitStream`, at most `window` unanswered at a time,
    /// and yields one [`Submitted`] per booking as the answers come (in the order sent, except
    /// that shed ones come again after their retry). If the stream breaks, it is re-opened and
    /// the unanswered submissions are sent again (harmless: they are idempotent by TCN). The
    /// channel ends after the last answer, or after an `Err` when the gateway cannot be
    /// reached within the retry policy or refuses the stream itself.
    pub fn submit_many<I>(
        &self,
        subs: I,
        window: usize,
    ) -> mpsc::Receiver<Result<Submitted, Status>>
    where
        I: IntoIterator<Item = pb::Submission>,
        I::IntoIter: Send + 'static,
    {
        let window = window.max(1);
        let (tx, rx) = mpsc::channel(window);
        let this = self.clone();
        let input = subs.into_iter();
        tokio::spawn(async move {
            if let Err(e) = this.drive_submit_many(input, window, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    async fn drive_submit_many(
        &self,
        mut input: impl Iterator<Item = pb::Submission>,
        window: usize,
        out: &mpsc::Sender<Result<Submitted, Status>>,
    ) -> Result<(), Status> {
        struct Item {
            index: usize,
            sub: pb::Submission,
            tries: u32,
        }
        let retry = self.cfg.retry;
        let mut next_index = 0usize;
        let mut input_done = false;
        // Sent on the current stream and not yet answered, in the order sent.
        let mut inflight: VecDeque<Item> = VecDeque::new();
        // Shed by the gateway, to be sent again when due.
        let mut later: VecDeque<(Instant, Item)> = VecDeque::new();
        let mut stream_failures = 0u32;
        loop {
            // (Re)open the stream; what was unanswered goes first.
            let (req_tx, req_rx) = mpsc::channel::<pb::Submission>(window);
            for it in &inflight {
                let _ = req_tx.try_send(it.sub.clone());
            }
            let mut svc = self.submission_service();
            let opened = svc
                .submit_stream(tokio_stream::wrappers::ReceiverStream::new(req_rx))
                .await;
            let mut inbound = match opened {
                Ok(r) => r.into_inner(),
                Err(s) if let Some(refused) = crate::retry::refused_at_handshake(&s) => {
                    return Err(refused);
                }
                Err(s)
                    if stream_retryable(s.code()) && stream_failures + 1 < retry.max_attempts =>
                {
                    stream_failures += 1;
                    self.failover();
                    tokio::time::sleep(retry.delay(stream_failures)).await;
                    continue;
                }
                Err(s) => return Err(s),
            };
            loop {
                // Send while the window allows and something is ready.
                while inflight.len() < window {
                    let due = later.front().is_some_and(|(t, _)| *t <= Instant::now());
                    let item = if due {
                        later.pop_front().map(|(_, it)| it)
                    } else if !input_done {
                        match input.next() {
                            Some(sub) => {
                                next_index += 1;
                                Some(Item {
                                    index: next_index - 1,
                                    sub,
                                    tries: 0,
                                })
                            }
                            None => {
                                input_done = true;
                                None
                            }
                        }
                    } else {
                        None
                    };
                    let Some(it) = item else { break };
                    // Never blocks: the channel holds at most `window` and so does inflight.
                    if req_tx.send(it.sub.clone()).await.is_err() {
                        inflight.push_back(it);
                        break;
                    }
                    inflight.push_back(it);
                }
                if input_done && inflight.is_empty() && later.is_empty() {
                    return Ok(());
                }
                let wake = later.front().map(|(t, _)| *t);
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    _ = async {
                        match wake {
                            Some(t) if inflight.len() < window => tokio::time::sleep_until(t).await,
                            _ => std::future::pending().await,
                        }
                    } => continue,
                };
                match msg {
                    Ok(Some(resp)) => {
                        stream_failures = 0;
                        let Some(mut it) = inflight.pop_front() else {
                            return Err(Status::internal("gateway answered more than was sent"));
                        };
                        let result = match resp.result {
                            Some(pb::submit_stream_response::Result::Receipt(r)) => Ok(r),
                            Some(pb::submit_stream_response::Result::Error(e)) => {
                                Err(Status::new(Code::from(e.code), e.message))
                            }
                            None => Err(Status::internal("empty answer in the submit stream")),
                        };
                        match result {
                            Err(s) if retryable(s.code()) && it.tries + 1 < retry.max_attempts => {
                                it.tries += 1;
                                later.push_back((Instant::now() + retry.delay(it.tries), it));
                            }
                            result => {
                                let done = Submitted {
                                    index: it.index,
                                    tcn: it.sub.tcn,
                                    result,
                                };
                                if out.send(Ok(done)).await.is_err() {
                                    return Ok(()); // the caller stopped listening
                                }
                            }
                        }
                    }
                    other => {
                        // Ended or broke with submissions unanswered: re-open and re-send.
                        let s = match other {
                            Err(s) => s,
                            _ => Status::unavailable("submit stream ended early"),
                        };
                        if !stream_retryable(s.code()) || stream_failures + 1 >= retry.max_attempts
                        {
                            return Err(s);
                        }
                        stream_failures += 1;
                        tracing::debug!(unanswered = inflight.len(), code = ?s.code(), "submit stream broke; re-opening");
                        self.failover();
                        tokio::time::sleep(retry.delay(stream_failures)).await;
                        break;
                    }
                }
            }
        }
    }

    /// Waits until the gateway has produced every response for `tcn` (its stage is
    /// COMPLETED), then returns this bureau's responses about it in cursor order: the
    /// criminal-history response, and the immigration response where the jurisdiction
    /// receives results. Reads the bureau's retained response log from its start (there is
    /// no index by TCN on the wire), so it suits interactive use, not bulk.
    pub async fn wait_for_responses(
        &self,
        tcn: &str,
        timeout: Duration,
    ) -> Result<Vec<pb::BureauResponse>, Status> {
        let deadline = Instant::now() + timeout;
        let mut poll = Duration::from_millis(20);
        loop {
            let st = self.status(tcn).await?;
            if st.stage() == pb::Stage::Completed {
                break;
            }
            if Instant::now() + poll > deadline {
                return Err(Status::deadline_exceeded(format!(
                    "{tcn} was still being processed after {} s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_secs(1));
        }
        let mut all = self.follow_responses(None, false);
        let mut out = vec![];
        while let Some(r) = all.next().await? {
            if r.tcn == tcn {
                out.push(r);
            }
        }
        Ok(out)
    }
}
