//! An incremental Server-Sent Events parser (the WHATWG event-stream format) for streamed chat
//! completions: bytes go in as they arrive, in chunks cut anywhere; complete events come out.
//!
//! Lines end with LF, CRLF or CR; a line starting with `:` is a comment; `data:` lines of one
//! event are joined with `\n`; an empty line ends the event; other fields (`event`, `id`,
//! `retry`) are kept or ignored as the format says. Invalid UTF-8 is replaced, never a panic.

/// One event: its `event` type (if any) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when present.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Feed bytes with [`SseParser::push`]; take events as they complete.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of an unfinished line.
    line: Vec<u8>,
    /// The previous byte was a CR (so a following LF belongs to the same line end).
    after_cr: bool,
    data: Vec<String>,
    has_data: bool,
    event: Option<String>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes `bytes` and returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line) {
                        out.push(event);
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
        out
    }

    /// The stream ended: an event not yet closed by an empty line is dropped, as the format
    /// says (a truncated stream must not yield a half event). Returns whether anything was
    /// pending, so callers can tell a clean end from a cut one.
    pub fn finish(&mut self) -> bool {
        let pending = !self.line.is_empty() || self.has_data;
        *self = Self::default();
        pending
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            if !self.has_data {
                self.event = None;
                return None;
            }
            let event = SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data).join("\n"),
            };
            self.has_data = false;
            return Some(event);
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "data" => {
                self.data.push(value.to_string());
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        chunks.iter().flat_map(|c| p.push(c)).collect()
    }

    const STREAM: &str = concat!(
        ": keep-alive comment\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "event: message\r\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n",
        "data: line one\rdata: line two\r\r",
        "data:no-space\n",
        "id: 7\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn parses_fields_comments_and_every_line_ending() {
        let events = parse_all(&[STREAM.as_bytes()]);
        let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(
            data,
            [
                r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
                r#"{"choices":[{"delta":{"content":"lo"}}]}"#,
                "line one\nline two",
                "no-space",
                "[DONE]"
            ]
        );
        assert_eq!(events[1].event.as_deref(), Some("message"));
        assert_eq!(events[0].event, None);
    }

    #[test]
    fn a_cut_stream_yields_no_half_event() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: {\"choices\":[]}\n\ndata: {\"trunc").len() == 1);
        assert!(p.finish(), "something was pending");
        assert!(!SseParser::new().finish());
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..12)) {
            let bytes = STREAM.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts {
                chunks.push(&bytes[last..c]);
                last = c;
            }
            chunks.push(&bytes[last..]);
            prop_assert_eq!(parse_all(&chunks), parse_all(&[bytes]));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut p = SseParser::new();
            let events = p.push(&bytes);
            p.finish();
            // Every event came from a `data` field, so the input held that many "data" markers.
            let markers = bytes.windows(4).filter(|w| w == b"data").count();
            prop_assert!(events.len() <= markers);
        }
    }
}
