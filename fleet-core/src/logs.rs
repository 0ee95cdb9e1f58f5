//! A bounded per-host log tail built from `logData` chunks, for late joiners.
//!
//! llama-swap sends log text in arbitrary chunks (a chunk may end mid-line, and the proxy and
//! upstream logs interleave), so partial lines are kept per source until their newline arrives.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::wire::LogSource;

/// One complete log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Which log it came from.
    pub source: LogSource,
    /// The text, without the line terminator.
    pub text: String,
}

/// The last `cap` lines of one host's logs (default 2,000).
///
/// # Example
/// ```
/// use boo_fleet_core::logs::LogTail;
/// use boo_fleet_core::wire::LogSource;
/// let mut tail = LogTail::new(2);
/// assert!(tail.push(LogSource::Upstream, "loading mo").is_empty());
/// let done = tail.push(LogSource::Upstream, "del\nready\nlisten");
/// assert_eq!(done.len(), 2);
/// tail.push(LogSource::Proxy, "swap done\n");
/// let texts: Vec<&str> = tail.lines().map(|l| l.text.as_str()).collect();
/// assert_eq!(texts, ["ready", "swap done"]); // capped at 2
/// ```
#[derive(Debug, Clone)]
pub struct LogTail {
    cap: usize,
    lines: VecDeque<LogLine>,
    partial: [String; 2],
}

/// A partial line longer than this is emitted as a line of its own.
const MAX_PARTIAL: usize = 64 * 1024;

impl Default for LogTail {
    fn default() -> Self {
        Self::new(2_000)
    }
}

impl LogTail {
    /// A tail keeping the last `cap` lines (at least 1).
    pub fn new(cap: usize) -> Self {
        LogTail {
            cap: cap.max(1),
            lines: VecDeque::new(),
            partial: [String::new(), String::new()],
        }
    }

    /// Adds a chunk; returns the lines it completed (to relay to live followers).
    /// `\r\n` and `\n` end lines; a partial line waits for the next chunk of its source.
    pub fn push(&mut self, source: LogSource, chunk: &str) -> Vec<LogLine> {
        let slot = match source {
            LogSource::Proxy => 0,
            LogSource::Upstream => 1,
        };
        let mut done = Vec::new();
        let mut rest = chunk;
        while let Some(i) = rest.find('\n') {
            let mut text = std::mem::take(&mut self.partial[slot]);
            text.push_str(&rest[..i]);
            if text.ends_with('\r') {
                text.pop();
            }
            done.push(LogLine { source, text });
            rest = &rest[i + 1..];
        }
        self.partial[slot].push_str(rest);
        if self.partial[slot].len() > MAX_PARTIAL {
            let text = std::mem::take(&mut self.partial[slot]);
            done.push(LogLine { source, text });
        }
        for line in &done {
            if self.lines.len() == self.cap {
                self.lines.pop_front();
            }
            self.lines.push_back(line.clone());
        }
        done
    }

    /// Stored lines, oldest first.
    pub fn lines(&self) -> impl DoubleEndedIterator<Item = &LogLine> + ExactSizeIterator {
        self.lines.iter()
    }

    /// The last `n` stored lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }

    /// Lines stored.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no line is stored.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests;
