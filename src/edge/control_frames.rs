//! A bound on HTTP/2 control frames per connection.
//!
//! hyper and h2 bound what costs memory: streams reset before they are accepted
//! (`max_pending_accept_reset_streams`), streams reset for the client's errors
//! (`max_local_error_reset_streams`), headers (`max_header_list_size`), and they answer one
//! PING or SETTINGS before reading the next. Nothing bounds the rate of frames that cost only
//! CPU: a client that sends WINDOW_UPDATE, PING, SETTINGS, RST_STREAM or PRIORITY frames as
//! fast as it can keeps a core busy for as long as it likes. [`ControlFrames`] reads the frame
//! headers on the decrypted read side of a connection that starts with the HTTP/2 preface,
//! counts those frames, and fails the read once a connection sends more than its budget
//! within a second: hyper then closes the connection. Any other connection (HTTP/1.1) is
//! passed through untouched after its first byte.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

use crate::ops::metrics::{Limit, Metrics};

/// What an HTTP/2 client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame header: 24-bit length, type, flags, stream id.
const HEADER: usize = 9;
/// PRIORITY, RST_STREAM, SETTINGS, PING, WINDOW_UPDATE (RFC 9113 §6).
const CONTROL: [u8; 5] = [0x2, 0x3, 0x4, 0x6, 0x8];

/// Where the scan is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Matching the preface; this many bytes matched so far.
    Preface(usize),
    /// Reading a frame header; this many bytes of it read so far.
    Header([u8; HEADER], usize),
    /// Skipping this many payload bytes.
    Payload(usize),
    /// Not HTTP/2: nothing to scan.
    Off,
    /// Over the budget: every read fails.
    Flooded,
}

/// A connection's read side, with its HTTP/2 control frames counted against a budget.
pub(super) struct ControlFrames<I> {
    /// The connection.
    io: I,
    /// Where the scan is.
    scan: Scan,
    /// Control frames allowed per second.
    budget: u32,
    /// When the current counting window began.
    window: Instant,
    /// Control frames seen in it.
    count: u32,
    /// For the flood count.
    metrics: Arc<Metrics>,
}

impl<I> ControlFrames<I> {
    /// Wraps `io`, allowing `budget` control frames a second.
    pub(super) fn new(io: I, budget: u32, metrics: Arc<Metrics>) -> ControlFrames<I> {
        ControlFrames {
            io,
            scan: Scan::Preface(0),
            budget,
            window: Instant::now(),
            count: 0,
            metrics,
        }
    }

    /// Scans bytes just read; `false` once the budget is exceeded.
    fn scan(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            match &mut self.scan {
                Scan::Off => return true,
                Scan::Flooded => return false,
                Scan::Preface(matched) => {
                    let want = &PREFACE[*matched..];
                    let n = want.len().min(data.len());
                    if data[..n] != want[..n] {
                        self.scan = Scan::Off;
                        return true;
                    }
                    *matched += n;
                    data = &data[n..];
                    if *matched == PREFACE.len() {
                        self.scan = Scan::Header([0; HEADER], 0);
                    }
                }
                Scan::Header(header, have) => {
                    let n = (HEADER - *have).min(data.len());
                    header[*have..*have + n].copy_from_slice(&data[..n]);
                    *have += n;
                    data = &data[n..];
                    if *have == HEADER {
                        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
                        let control = CONTROL.contains(&header[3]);
                        self.scan = match length {
                            0 => Scan::Header([0; HEADER], 0),
                            n => Scan::Payload(n as usize),
                        };
                        if control && !self.count_one() {
                            self.scan = Scan::Flooded;
                            self.metrics.limited(Limit::ControlFrameFlood);
                            return false;
                        }
                    }
                }
                Scan::Payload(left) => {
                    let n = (*left).min(data.len());
                    *left -= n;
                    data = &data[n..];
                    if *left == 0 {
                        self.scan = Scan::Header([0; HEADER], 0);
                    }
                }
            }
        }
        true
    }

    /// Counts one control frame; `false` when the budget is spent in under a second. The
    /// clock is read once per `budget` frames, not per frame.
    fn count_one(&mut self) -> bool {
        self.count += 1;
        if self.count <= self.budget {
            return true;
        }
        let now = Instant::now();
        if now.duration_since(self.window) < Duration::from_secs(1) {
            return false;
        }
        self.window = now;
        self.count = 1;
        true
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ControlFrames<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.scan == Scan::Off {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if !this.scan(&buf.filled()[before..]) => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("HTTP/2 control frame flood: over {} a second", this.budget),
                )))
            }
            other => other,
        }
    }
}

super::write_through::write_through!(ControlFrames);

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, 0, 0, 0, 0, 1];
        out.extend_from_slice(payload);
        out
    }

    fn scanner(budget: u32) -> ControlFrames<()> {
        ControlFrames::new((), budget, Arc::default())
    }

    #[tokio::test(start_paused = true)]
    async fn counts_control_frames_across_split_reads_and_skips_payloads() {
        let mut scan = scanner(3);
        let mut bytes = PREFACE.to_vec();
        // DATA whose payload looks like frame headers, then three WINDOW_UPDATEs: within budget.
        bytes.extend(frame(0x0, &frame(0x8, &[0; 4]).repeat(10)));
        for _ in 0..3 {
            bytes.extend(frame(0x8, &[0, 0, 0, 1]));
        }
        for piece in bytes.chunks(5) {
            assert!(scan.scan(piece), "within the budget");
        }
        // The fourth in the same second is over it, even split mid-header.
        let over = frame(0x6, &[0; 8]);
        assert!(scan.scan(&over[..4]));
        assert!(!scan.scan(&over[4..]));
        assert!(!scan.scan(b"anything"), "stays refused");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_is_per_second() {
        let mut scan = scanner(2);
        assert!(scan.scan(PREFACE));
        for _ in 0..10 {
            let two = [frame(0x4, &[]), frame(0x2, &[0; 5])].concat();
            assert!(scan.scan(&two));
            tokio::time::advance(Duration::from_millis(1001)).await;
        }
    }

    #[test]
    fn http1_is_not_scanned() {
        let mut scan = scanner(1);
        assert!(scan.scan(b"GET / HTTP/1.1\r\n"));
        assert_eq!(scan.scan, Scan::Off);
        assert!(scan.scan(&frame(0x8, &[0; 4]).repeat(100)));
    }
}
