use super::*;

use bytes::BytesMut;
use postgres_protocol::message::frontend as pg;
use proptest::prelude::*;

const MAX: usize = 1 << 20;

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn header(tag: u8, declared: u32) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&declared.to_be_bytes());
    out
}

fn always(_: u8) -> bool {
    true
}

fn never(_: u8) -> bool {
    false
}

// ---- whole messages ----

#[test]
fn returns_whole_message_with_tag_body_and_len() {
    let buf = message(b'Q', b"select 1\0");
    let mut framer = Framer::new(MAX);
    for inspect in [always, never] {
        assert_eq!(
            framer.step(&buf, inspect),
            Ok(Step::Message {
                tag: b'Q',
                body: b"select 1\0",
                len: buf.len(),
            })
        );
        assert!(framer.at_boundary());
    }
}

#[test]
fn returns_empty_body_message_after_five_bytes() {
    let buf = message(b'S', b"");
    assert_eq!(
        Framer::new(MAX).step(&buf, never),
        Ok(Step::Message {
            tag: b'S',
            body: b"",
            len: 5,
        })
    );
}

#[test]
fn returns_only_the_first_of_several_messages() {
    let mut buf = message(b'Z', b"I");
    buf.extend_from_slice(&message(b'C', b"SELECT 1\0"));
    let mut framer = Framer::new(MAX);
    let Ok(Step::Message { tag, body, len }) = framer.step(&buf, always) else {
        panic!("first message not returned whole");
    };
    assert_eq!((tag, body, len), (b'Z', &b"I"[..], 6));
    let Ok(Step::Message { tag, body, len }) = framer.step(&buf[len..], always) else {
        panic!("second message not returned whole");
    };
    assert_eq!((tag, body, 6 + len), (b'C', &b"SELECT 1\0"[..], buf.len()));
}

#[test]
fn split_message_returns_whole_messages_only() {
    let buf = message(b'K', &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        split_message(&buf, MAX),
        Ok(Some((b'K', &buf[5..], buf.len())))
    );
    assert_eq!(split_message(&buf[..7], MAX), Ok(None));
    assert_eq!(split_message(&buf[..3], MAX), Ok(None));
    assert_eq!(
        split_message(&buf, 7),
        Err(ProtocolError::MessageTooLong {
            tag: b'K',
            len: 8,
            max: 7,
        })
    );
}

// ---- headers ----

#[test]
fn header_split_at_every_offset_needs_more() {
    let buf = message(b'D', b"row data");
    for cut in 0..HEADER_LEN {
        for inspect in [always, never] {
            let mut framer = Framer::new(MAX);
            assert_eq!(framer.step(&buf[..cut], inspect), Ok(Step::NeedMore));
            assert!(framer.at_boundary());
        }
    }
}

#[test]
fn rejects_declared_length_below_4() {
    for declared in 0..4 {
        assert_eq!(
            Framer::new(MAX).step(&header(b'Q', declared), always),
            Err(ProtocolError::BadLength {
                tag: b'Q',
                len: declared,
            })
        );
    }
}

#[test]
fn rejects_message_over_max_from_the_header_alone() {
    let mut framer = Framer::new(100);
    // Body of exactly the limit: fine (it just needs more bytes).
    assert_eq!(framer.step(&header(b'D', 104), always), Ok(Step::NeedMore));
    // One over: refused with only the five header bytes present.
    for inspect in [always, never] {
        assert_eq!(
            Framer::new(100).step(&header(b'D', 105), inspect),
            Err(ProtocolError::MessageTooLong {
                tag: b'D',
                len: 101,
                max: 100,
            })
        );
    }
    assert!(matches!(
        Framer::new(100).step(&header(b'D', u32::MAX), never),
        Err(ProtocolError::MessageTooLong { .. })
    ));
}

// ---- incomplete messages ----

#[test]
fn inspected_incomplete_message_needs_more() {
    let buf = message(b'Z', b"I");
    let mut framer = Framer::new(MAX);
    for cut in 0..buf.len() {
        assert_eq!(framer.step(&buf[..cut], always), Ok(Step::NeedMore));
        assert!(framer.at_boundary());
    }
}

#[test]
fn uninspected_incomplete_message_streams_in_partial_pieces() {
    let body: Vec<u8> = (0..=255).collect();
    let whole = message(b'D', &body);
    // Deliver the message in chunks of 7 bytes, the way a small read buffer would.
    let mut framer = Framer::new(MAX);
    let mut pieces = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for chunk in whole.chunks(7) {
        pending.extend_from_slice(chunk);
        loop {
            match framer.step(&pending, never).unwrap() {
                Step::Partial { tag, len } => {
                    pieces.push((tag, len, framer.at_boundary()));
                    pending.drain(..len);
                }
                Step::Message { tag, len, .. } => {
                    pieces.push((Some(tag), len, framer.at_boundary()));
                    pending.drain(..len);
                }
                Step::NeedMore => break,
            }
        }
    }
    assert!(pending.is_empty());
    assert_eq!(pieces.iter().map(|p| p.1).sum::<usize>(), whole.len());
    assert_eq!(pieces[0].0, Some(b'D'));
    assert!(pieces[1..].iter().all(|p| p.0.is_none()), "{pieces:?}");
    let last = pieces.len() - 1;
    for (i, piece) in pieces.iter().enumerate() {
        assert_eq!(piece.2, i == last, "at_boundary after piece {i}");
    }
}

#[test]
fn partial_piece_never_takes_bytes_of_the_next_message() {
    let first = message(b'D', &[7; 20]);
    let second = message(b'Z', b"I");
    let mut framer = Framer::new(MAX);
    assert_eq!(
        framer.step(&first[..10], never),
        Ok(Step::Partial {
            tag: Some(b'D'),
            len: 10,
        })
    );
    let mut rest = first[10..].to_vec();
    rest.extend_from_slice(&second);
    assert_eq!(
        framer.step(&rest, never),
        Ok(Step::Partial {
            tag: None,
            len: first.len() - 10,
        })
    );
    assert!(framer.at_boundary());
    assert_eq!(
        framer.step(&rest[first.len() - 10..], always),
        Ok(Step::Message {
            tag: b'Z',
            body: b"I",
            len: second.len(),
        })
    );
}

#[test]
fn mid_message_empty_buffer_needs_more() {
    let whole = message(b'd', &[0; 50]);
    let mut framer = Framer::new(MAX);
    assert!(matches!(
        framer.step(&whole[..8], never),
        Ok(Step::Partial {
            tag: Some(b'd'),
            len: 8
        })
    ));
    assert_eq!(framer.step(&[], never), Ok(Step::NeedMore));
    assert!(!framer.at_boundary());
}

#[test]
fn mid_message_bytes_are_not_read_as_a_header() {
    // Body bytes that look like a header with a bad length must not be checked.
    let mut body = header(b'X', 0);
    body.extend_from_slice(&[0; 10]);
    let whole = message(b'd', &body);
    let mut framer = Framer::new(MAX);
    assert!(matches!(
        framer.step(&whole[..5], never),
        Ok(Step::Partial { len: 5, .. })
    ));
    assert_eq!(
        framer.step(&whole[5..], always),
        Ok(Step::Partial {
            tag: None,
            len: body.len(),
        })
    );
    assert!(framer.at_boundary());
}

// ---- cross-check ----

#[test]
fn frames_messages_encoded_by_postgres_protocol() {
    let mut buf = BytesMut::new();
    pg::query("select 1", &mut buf).unwrap();
    pg::parse("s1", "select $1::int", [23], &mut buf).unwrap();
    pg::bind(
        "p1",
        "s1",
        [1],
        [&42_i32.to_be_bytes()[..]],
        |v, out| {
            out.extend_from_slice(v);
            Ok(postgres_protocol::IsNull::No)
        },
        [1],
        &mut buf,
    )
    .map_err(|_| "bind failed")
    .unwrap();
    pg::execute("p1", 0, &mut buf).unwrap();
    pg::sync(&mut buf);

    let mut framer = Framer::new(MAX);
    let mut at = 0;
    let mut tags = Vec::new();
    while at < buf.len() {
        let Ok(Step::Message { tag, body, len }) = framer.step(&buf[at..], always) else {
            panic!("message at offset {at} not framed whole");
        };
        assert_eq!(body.len() + HEADER_LEN, len);
        tags.push(tag);
        at += len;
    }
    assert_eq!(at, buf.len());
    assert_eq!(tags, b"QPBES");
}

// ---- properties ----

/// Drives a framer like a read loop: keeps unconsumed bytes, appends the next chunk.
/// Returns the tag of every message seen and the number of bytes consumed.
fn read_loop(chunks: &[&[u8]], inspect: fn(u8) -> bool) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut framer = Framer::new(MAX);
    let mut pending: Vec<u8> = Vec::new();
    let mut tags = Vec::new();
    let mut consumed = 0;
    for chunk in chunks {
        pending.extend_from_slice(chunk);
        loop {
            let (tag, len) = match framer.step(&pending, inspect)? {
                Step::Message { tag, body, len } => {
                    assert_eq!(body.len() + HEADER_LEN, len);
                    (Some(tag), len)
                }
                Step::Partial { tag, len } => {
                    assert!(len > 0 && len <= pending.len());
                    (tag, len)
                }
                Step::NeedMore => break,
            };
            tags.extend(tag);
            consumed += len;
            pending.drain(..len);
        }
    }
    assert!(pending.is_empty(), "{} bytes left over", pending.len());
    assert!(framer.at_boundary());
    Ok((tags, consumed))
}

fn cut_into_chunks(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points
}

proptest! {
    #[test]
    fn random_stream_in_random_chunks_yields_the_original_messages(
        messages in proptest::collection::vec(
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..3000)),
            0..12,
        ),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let mut stream = Vec::new();
        for (tag, body) in &messages {
            stream.extend_from_slice(&message(*tag, body));
        }
        let points = cut_into_chunks(&stream, &cuts);
        let chunks: Vec<&[u8]> = points.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
        let expected_tags: Vec<u8> = messages.iter().map(|(tag, _)| *tag).collect();
        for inspect in [always, never] {
            let (tags, consumed) = read_loop(&chunks, inspect).unwrap();
            prop_assert_eq!(&tags, &expected_tags);
            prop_assert_eq!(consumed, stream.len());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        max in 0_usize..512,
        inspect_all in any::<bool>(),
    ) {
        let mut framer = Framer::new(max);
        let mut rest = &bytes[..];
        while let Ok(step) = framer.step(rest, |_| inspect_all) {
            let len = match step {
                Step::Message { len, .. } | Step::Partial { len, .. } => len,
                Step::NeedMore => break,
            };
            prop_assert!(len > 0 && len <= rest.len());
            rest = &rest[len..];
        }
    }
}
