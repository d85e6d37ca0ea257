//! Copies the result part of an origin reply, as it is forwarded to the client, into
//! the segments of a cache entry, up to a byte cap.
//!
//! What a result is: for a simple query, RowDescription, DataRows and CommandComplete;
//! for an extended execution, each Describe's reply (ParameterDescription and
//! RowDescription or NoData, or RowDescription or NoData) as one segment, then the
//! Execute's DataRows and CommandComplete. ParseComplete, BindComplete and CloseComplete
//! are left out (the client's own messages decide them on a hit). Anything else, such as
//! an error, a notice, a parameter change or COPY, makes the reply unusable: it is
//! forwarded as usual and not stored.

use bytes::BytesMut;

use crate::cache::Recorded;
use crate::proxy::Record;
use crate::wire::pg::Frame;
use crate::wire::pg::backend::tag;
use crate::wire::pg::frontend::Target;

/// Which kind of Describe a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Described {
    /// Describe of the statement: ParameterDescription, then RowDescription or NoData.
    Statement,
    /// Describe of the portal: RowDescription or NoData.
    Portal,
}

impl Described {
    pub(super) fn target(self) -> Target {
        match self {
            Described::Statement => Target::Statement,
            Described::Portal => Target::Portal,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Recording,
    Complete,
    Oversized,
    Unusable,
}

/// A recording in progress.
#[derive(Debug)]
pub struct Recorder {
    describes: Vec<Described>,
    segments: Vec<BytesMut>,
    /// Messages received for the Describe being recorded.
    in_describe: u8,
    bytes: usize,
    limit: usize,
    has_rows: bool,
    state: State,
}

impl Recorder {
    /// Records a simple query's result, up to `limit` bytes.
    pub fn simple(limit: usize) -> Recorder {
        Recorder::extended(Vec::new(), limit)
    }

    /// Records an extended execution with these Describes before its Execute.
    pub fn extended(describes: Vec<Described>, limit: usize) -> Recorder {
        Recorder {
            segments: vec![BytesMut::new()],
            describes,
            in_describe: 0,
            bytes: 0,
            limit,
            has_rows: false,
            state: State::Recording,
        }
    }

    fn describing(&self) -> Option<Described> {
        self.describes.get(self.segments.len() - 1).copied()
    }
}

impl Record for Recorder {
    type Message = Frame;

    fn accept(&mut self, frame: &Frame) {
        if !matches!(self.state, State::Recording | State::Complete) {
            return;
        }
        let message = frame.tag();
        if matches!(
            message,
            tag::PARSE_COMPLETE | tag::BIND_COMPLETE | tag::CLOSE_COMPLETE
        ) {
            return;
        }
        if self.state == State::Complete {
            // A notice or a parameter change after the result: a hit would leave it out.
            self.state = State::Unusable;
            return;
        }
        self.bytes += frame.len();
        if self.bytes > self.limit {
            self.state = State::Oversized;
            self.segments.clear();
            return;
        }
        let fits = match self.describing() {
            Some(Described::Statement) if self.in_describe == 0 => {
                message == tag::PARAMETER_DESCRIPTION
            }
            Some(_) => matches!(message, tag::ROW_DESCRIPTION | tag::NO_DATA),
            // Simple queries start with RowDescription; Executes go straight to rows.
            None => {
                matches!(message, tag::DATA_ROW | tag::COMMAND_COMPLETE)
                    || (message == tag::ROW_DESCRIPTION
                        && self.describes.is_empty()
                        && !self.has_rows)
            }
        };
        if !fits {
            self.state = State::Unusable;
            return;
        }
        if let Some(segment) = self.segments.last_mut() {
            segment.extend_from_slice(frame.raw());
        }
        match self.describing() {
            Some(described) => {
                self.in_describe += 1;
                let complete = match described {
                    Described::Statement => self.in_describe == 2,
                    Described::Portal => true,
                };
                if complete {
                    self.in_describe = 0;
                    self.segments.push(BytesMut::new());
                }
            }
            None => {
                self.has_rows |= message == tag::DATA_ROW;
                if message == tag::COMMAND_COMPLETE {
                    self.state = State::Complete;
                }
            }
        }
    }

    fn gave_up(&self) -> Option<Recorded> {
        match self.state {
            State::Oversized => Some(Recorded::Oversized),
            State::Unusable => Some(Recorded::Unusable),
            State::Recording | State::Complete => None,
        }
    }

    fn finish(self) -> Recorded {
        match self.state {
            State::Complete => Recorded::Complete {
                segments: self.segments.into_iter().map(BytesMut::freeze).collect(),
                has_rows: self.has_rows,
            },
            State::Oversized => Recorded::Oversized,
            State::Recording | State::Unusable => Recorded::Unusable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pg::{encode, split_frame};

    fn feed(recorder: &mut Recorder, write: impl FnOnce(&mut BytesMut)) {
        let mut buf = BytesMut::new();
        write(&mut buf);
        while let Some(frame) = split_frame(&mut buf, 1 << 20).expect("valid") {
            recorder.accept(&frame);
        }
    }

    fn row_description(b: &mut BytesMut) {
        encode::message(b, tag::ROW_DESCRIPTION, |body| {
            body.extend_from_slice(&[0, 0])
        });
    }

    fn data_row(b: &mut BytesMut) {
        encode::message(b, tag::DATA_ROW, |body| body.extend_from_slice(&[0, 0]));
    }

    #[test]
    fn simple_query_result() {
        let mut recorder = Recorder::simple(1 << 20);
        feed(&mut recorder, |b| {
            row_description(b);
            data_row(b);
            data_row(b);
            encode::command_complete(b, "SELECT 2");
        });
        let Recorded::Complete { segments, has_rows } = recorder.finish() else {
            panic!("complete")
        };
        assert_eq!(segments.len(), 1);
        assert!(has_rows);
    }

    #[test]
    fn extended_segments_per_describe_then_execute() {
        let mut recorder =
            Recorder::extended(vec![Described::Statement, Described::Portal], 1 << 20);
        feed(&mut recorder, |b| {
            encode::parse_complete(b);
            encode::message(b, tag::PARAMETER_DESCRIPTION, |body| {
                body.extend_from_slice(&[0, 0])
            });
            row_description(b);
            encode::bind_complete(b);
            row_description(b);
            encode::command_complete(b, "SELECT 0");
            encode::close_complete(b);
        });
        let Recorded::Complete { segments, has_rows } = recorder.finish() else {
            panic!("complete")
        };
        assert_eq!(segments.len(), 3);
        assert_eq!(segments[0][0], tag::PARAMETER_DESCRIPTION);
        assert_eq!(segments[1][0], tag::ROW_DESCRIPTION);
        assert_eq!(segments[2][0], tag::COMMAND_COMPLETE);
        assert!(!has_rows);
    }

    #[test]
    fn errors_notices_and_size_make_it_unstorable() {
        let mut notice = Recorder::simple(1 << 20);
        feed(&mut notice, |b| {
            row_description(b);
            encode::message(b, tag::NOTICE_RESPONSE, |body| body.extend_from_slice(&[0]));
            encode::command_complete(b, "SELECT 0");
        });
        assert_eq!(notice.gave_up(), Some(Recorded::Unusable));
        assert_eq!(notice.finish(), Recorded::Unusable);
        let mut late_notice = Recorder::simple(1 << 20);
        feed(&mut late_notice, |b| {
            row_description(b);
            encode::command_complete(b, "SELECT 0");
            encode::message(b, tag::NOTICE_RESPONSE, |body| body.extend_from_slice(&[0]));
        });
        assert_eq!(late_notice.finish(), Recorded::Unusable);
        let mut error = Recorder::simple(1 << 20);
        feed(&mut error, |b| {
            encode::error_response(b, "ERROR", "22012", "division by zero", None)
        });
        assert_eq!(error.finish(), Recorded::Unusable);
        let mut big = Recorder::simple(40);
        feed(&mut big, |b| {
            row_description(b);
            for _ in 0..10 {
                data_row(b);
            }
            encode::command_complete(b, "SELECT 10");
        });
        assert_eq!(big.gave_up(), Some(Recorded::Oversized));
        assert_eq!(big.finish(), Recorded::Oversized);
        let unfinished = Recorder::simple(1 << 20);
        assert_eq!(unfinished.finish(), Recorded::Unusable);
    }
}
