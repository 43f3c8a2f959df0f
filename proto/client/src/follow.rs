//! The cursor-ordered streams, followed through disconnects: a bureau's responses
//! ([`Client::follow_responses`]) and a field office's outcomes ([`Client::subscribe`]), the
//! [`CursorFile`] that keeps a follower's place across runs, and what a field office sends
//! back about what it read ([`Client::ack`], [`Client::decide`]).
//!
//! Every message of these streams carries a cursor that only grows, and the gateway can
//! replay from any cursor it still keeps. So a [`Follower`] needs no help from the caller to
//! survive a dropped connection or a gateway restart: it re-opens the stream after the last
//! cursor it delivered and drops anything at or below it, and the caller sees each message
//! once. It gives up only on a refusal (`PERMISSION_DENIED`, a revoked certificate) or when
//! the follow retry policy, by default unbounded, is spent.

use crate::config::{Client, Role};
use crate::error::ClientError;
use crate::retry::{RetryPolicy, stream_retryable};
use interop_proto::v1 as pb;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tonic::Status;

impl Client {
    /// The cursor of this bureau's latest response (0 if none): following from it
    /// ([`follow_responses`](Client::follow_responses)) reads only what comes next.
    pub async fn response_head(&self) -> Result<u64, Status> {
        let req = pb::GetResponseHeadRequest {};
        self.unary(Client::submission_service, req, |mut svc, r| async move {
            svc.get_response_head(r).await
        })
        .await
        .map(|h| h.cursor)
    }

    /// This bureau's response stream after `after_cursor` (`None` = from the start of the
    /// retained log). With `follow`, it stays open for new responses and re-opens itself after
    /// a disconnect; without, it ends at the end of what is stored.
    pub fn follow_responses(
        &self,
        after_cursor: Option<u64>,
        follow: bool,
    ) -> Follower<pb::BureauResponse> {
        Follower::new(
            self,
            after_cursor,
            follow,
            Client::submission_service,
            move |mut s, after| async move {
                let after_cursor = after.unwrap_or(0);
                let req = pb::StreamResponsesRequest {
                    after_cursor,
                    follow,
                };
                s.stream_responses(req).await
            },
        )
    }

    /// This field office's outcomes after `after_cursor` (`None` = after the office's last
    /// acknowledged cursor), following live and re-opening itself after a disconnect or a
    /// gateway restart from the last cursor it delivered.
    pub fn subscribe(&self, after_cursor: Option<u64>) -> Follower<pb::FieldOfficeNotification> {
        self.subscription(after_cursor, true)
    }

    /// Like [`subscribe`](Client::subscribe); without `follow` it ends at the end of what is
    /// stored.
    pub fn subscription(
        &self,
        after_cursor: Option<u64>,
        follow: bool,
    ) -> Follower<pb::FieldOfficeNotification> {
        Follower::new(
            self,
            after_cursor,
            follow,
            Client::field_office_service,
            move |mut s, after_cursor| async move {
                let req = pb::SubscribeRequest {
                    after_cursor,
                    follow,
                };
                s.subscribe(req).await
            },
        )
    }

    /// Acknowledges a field office's outcomes up to and including `cursor`; returns the
    /// office's acknowledged cursor (which never goes backwards).
    pub async fn ack(&self, cursor: u64) -> Result<u64, Status> {
        let req = pb::AckRequest { cursor };
        self.unary(Client::field_office_service, req, |mut s, r| async move {
            s.ack(r).await
        })
        .await
        .map(|a| a.acked_cursor)
    }

    /// Records (or returns the same earlier) decision on an identification in the office's
    /// area: a detainer, no action, or discretion.
    pub async fn decide(&self, req: pb::DecideRequest) -> Result<pb::Decision, Status> {
        self.unary(Client::field_office_service, req, |mut s, r| async move {
            s.decide(r).await
        })
        .await
    }
}

/// A message of a cursor-ordered stream.
pub trait Cursored {
    fn cursor(&self) -> u64;
}

impl Cursored for pb::BureauResponse {
    fn cursor(&self) -> u64 {
        self.cursor
    }
}

impl Cursored for pb::FieldOfficeNotification {
    fn cursor(&self) -> u64 {
        self.cursor
    }
}

type OpenStream<T> = Box<
    dyn FnMut(
            Option<u64>,
        ) -> Pin<Box<dyn Future<Output = Result<tonic::Streaming<T>, Status>> + Send>>
        + Send,
>;

/// A cursor-ordered stream (bureau responses or field-office outcomes) that re-opens
/// itself from the last cursor it delivered when the connection breaks or the gateway
/// restarts, and drops anything at or below that cursor, so each message reaches the caller
/// once. Gives up only on a refusal (e.g. `PERMISSION_DENIED`) or when the follow retry
/// policy is spent.
pub struct Follower<T> {
    open: OpenStream<T>,
    stream: Option<tonic::Streaming<T>>,
    last: Option<u64>,
    follow: bool,
    retry: RetryPolicy,
    /// For moving to another gateway when the stream breaks.
    client: Client,
    failures: u32,
}

impl<T: Cursored> Follower<T> {
    /// Follows the stream `open` starts after a cursor, with a fresh stub from `stub` on the
    /// gateway in use each time it (re-)opens.
    fn new<S, Fut>(
        client: &Client,
        after: Option<u64>,
        follow: bool,
        stub: fn(&Client) -> S,
        open: impl Fn(S, Option<u64>) -> Fut + Send + 'static,
    ) -> Self
    where
        S: 'static,
        Fut: Future<Output = Result<tonic::Response<tonic::Streaming<T>>, Status>> + Send + 'static,
    {
        let on = client.clone();
        let open: OpenStream<T> = Box::new(move |after| {
            let opened = open(stub(&on), after);
            Box::pin(async move { opened.await.map(tonic::Response::into_inner) })
        });
        Follower {
            open,
            stream: None,
            last: after,
            follow,
            retry: client.cfg.follow_retry,
            client: client.clone(),
            failures: 0,
        }
    }

    /// The last cursor delivered (or the starting cursor, before the first message).
    pub fn cursor(&self) -> Option<u64> {
        self.last
    }

    async fn backoff(&mut self, s: Status) -> Result<(), Status> {
        self.stream = None;
        self.failures += 1;
        if let Some(refused) = crate::retry::refused_at_handshake(&s) {
            return Err(refused);
        }
        if !stream_retryable(s.code()) || self.failures >= self.retry.max_attempts {
            return Err(s);
        }
        tracing::info!(failures = self.failures, code = ?s.code(), "stream interrupted; re-opening from its cursor");
        self.client.failover();
        tokio::time::sleep(self.retry.delay(self.failures)).await;
        Ok(())
    }

    /// The next message; `None` when a non-following stream has delivered everything.
    pub async fn next(&mut self) -> Result<Option<T>, Status> {
        loop {
            let stream = match &mut self.stream {
                Some(s) => s,
                None => match (self.open)(self.last).await {
                    Ok(s) => self.stream.insert(s),
                    Err(s) => {
                        self.backoff(s).await?;
                        continue;
                    }
                },
            };
            match stream.message().await {
                Ok(Some(m)) => {
                    self.failures = 0;
                    let c = m.cursor();
                    if self.last.is_some_and(|l| c <= l) {
                        continue; // seen before a reconnect
                    }
                    self.last = Some(c);
                    return Ok(Some(m));
                }
                Ok(None) if !self.follow => {
                    self.stream = None;
                    return Ok(None);
                }
                // A following stream only ends when the gateway shuts down: wait and resume.
                Ok(None) => self.backoff(Status::unavailable("stream ended")).await?,
                Err(s) => self.backoff(s).await?,
            }
        }
    }
}

/// A cursor kept in a small file so a follower continues exactly where it stopped across
/// runs. The file names the role it belongs to (`field-office/HOU 1234`), so one office's
/// state is never used for another; saving writes a temporary file, syncs it and renames it
/// over the old one, so a crash leaves either the old cursor or the new one.
#[derive(Debug)]
pub struct CursorFile {
    path: PathBuf,
    role: Role,
}

impl CursorFile {
    /// Opens (without creating) the state file for `role`; returns it with the cursor it
    /// holds, `None` if the file does not exist yet.
    pub fn open(
        path: impl Into<PathBuf>,
        role: &Role,
    ) -> Result<(CursorFile, Option<u64>), ClientError> {
        let path = path.into();
        let err = |reason: String| ClientError::State {
            path: path.clone(),
            reason,
        };
        let cursor = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut parts = text.split_whitespace();
                let (who, n) = (parts.next(), parts.next());
                match (who, n.map(str::parse::<u64>), parts.next()) {
                    (Some(w), Some(Ok(n)), None) if w == role.to_string() => Some(n),
                    (Some(w), Some(Ok(_)), None) => {
                        return Err(err(format!("it belongs to {w}, not {role}")));
                    }
                    _ => return Err(err("not a cursor file (expected `ROLE CURSOR`)".into())),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(err(e.to_string())),
        };
        Ok((
            CursorFile {
                path,
                role: role.clone(),
            },
            cursor,
        ))
    }

    /// Durably records `cursor`.
    pub fn save(&self, cursor: u64) -> Result<(), ClientError> {
        use std::io::Write;
        let err = |e: std::io::Error| ClientError::State {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        writeln!(f, "{} {cursor}", self.role).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_file_round_trips_and_refuses_another_role() {
        let dir = std::env::temp_dir().join(format!("interop-cursor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hou.cursor");
        let _ = std::fs::remove_file(&path);
        let hou: Role = "field-office/HOU".parse().unwrap();
        let (f, c) = CursorFile::open(&path, &hou).unwrap();
        assert_eq!(c, None);
        f.save(41).unwrap();
        f.save(42).unwrap();
        assert_eq!(CursorFile::open(&path, &hou).unwrap().1, Some(42));
        let atl: Role = "field-office/ATL".parse().unwrap();
        let e = CursorFile::open(&path, &atl).unwrap_err().to_string();
        assert!(e.contains("belongs to field-office/HOU"), "{e}");
        std::fs::write(&path, "garbage").unwrap();
        assert!(CursorFile::open(&path, &hou).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
