//! FakePeer: a **protocol fake** on 127.0.0.1 that speaks RocketMQ framing
//! with mqaudit's own codec, for behaviour a real broker cannot produce on
//! demand: never answering, answering out of order or late, dying in the
//! middle of a frame, sending garbage, or replaying a Java capture.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use mqaudit::remoting::{Command, Decoded, decode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the fake does with one request.
pub enum Action {
    /// Send this response (its opaque is set to the request's).
    Reply(Command),
    /// Send this response after a delay, without blocking other requests.
    ReplyAfter(Duration, Command),
    /// Write these raw bytes (garbage, a capture...).
    Raw(Vec<u8>),
    /// Write the first `n` bytes of this response's frame, then close the socket.
    CloseMidFrame(Command, usize),
    /// Never answer.
    Silence,
}

/// A running fake; dropped fakes keep serving until the runtime ends.
pub struct FakePeer {
    /// `127.0.0.1:port`.
    pub addr: String,
    accepted: Arc<AtomicUsize>,
}

impl FakePeer {
    /// Start a fake whose every request is handled by `handler`.
    pub async fn start<F>(handler: F) -> FakePeer
    where
        F: Fn(&Command) -> Action + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                tokio::spawn(async move {
                    let (mut reader, writer) = socket.into_split();
                    let writer = Arc::new(tokio::sync::Mutex::new(writer));
                    let mut buffer = BytesMut::new();
                    loop {
                        while let Ok(Decoded::Frame(request, used)) = decode(&buffer) {
                            buffer.advance(used);
                            let action = handler(&request);
                            let writer = writer.clone();
                            let finish = |mut response: Command| {
                                response.opaque = request.opaque;
                                response.flag |= 1;
                                response.to_bytes().expect("fake response encodes").to_vec()
                            };
                            match action {
                                Action::Reply(response) => {
                                    let bytes = finish(response);
                                    let _ = writer.lock().await.write_all(&bytes).await;
                                }
                                Action::ReplyAfter(delay, response) => {
                                    let bytes = finish(response);
                                    tokio::spawn(async move {
                                        tokio::time::sleep(delay).await;
                                        let _ = writer.lock().await.write_all(&bytes).await;
                                    });
                                }
                                Action::Raw(bytes) => {
                                    let _ = writer.lock().await.write_all(&bytes).await;
                                }
                                Action::CloseMidFrame(response, n) => {
                                    let bytes = finish(response);
                                    let mut w = writer.lock().await;
                                    let _ = w.write_all(&bytes[..n.min(bytes.len())]).await;
                                    let _ = w.shutdown().await;
                                    return;
                                }
                                Action::Silence => {}
                            }
                        }
                        match reader.read_buf(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
        FakePeer { addr, accepted }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A success response with a body.
pub fn ok(body: impl Into<bytes::Bytes>) -> Command {
    Command::response_to(&Command::request(0, Default::default()), 0, None).with_body(body)
}

/// A failure response.
pub fn fail(code: i32, remark: &str) -> Command {
    Command::response_to(
        &Command::request(0, Default::default()),
        code,
        Some(remark.to_string()),
    )
}
