//! Unit tests of the AMQP connection state on frames built here (the real traffic is in
//! tests/inspect_live.rs and the recorded capture in tests/amqp_offline.rs).

use super::*;
use crate::inspect::proto::testutil::{common, drive};

/// Builds AMQP frames.
#[derive(Default)]
pub(crate) struct Frames(pub Vec<u8>);

impl Frames {
    fn frame(mut self, kind: u8, channel: u16, payload: &[u8]) -> Self {
        self.0.push(kind);
        self.0.extend(channel.to_be_bytes());
        self.0.extend((payload.len() as u32).to_be_bytes());
        self.0.extend(payload);
        self.0.push(FRAME_END);
        self
    }

    pub(crate) fn method(self, channel: u16, class: u16, id: u16, args: &[u8]) -> Self {
        let mut p = class.to_be_bytes().to_vec();
        p.extend(id.to_be_bytes());
        p.extend(args);
        self.frame(METHOD, channel, &p)
    }

    /// A content header with a content type (when given).
    pub(crate) fn header(self, channel: u16, size: u64, content_type: Option<&str>) -> Self {
        let mut p = vec![0, 60, 0, 0];
        p.extend(size.to_be_bytes());
        match content_type {
            Some(ct) => {
                p.extend((1u16 << 15).to_be_bytes());
                p.extend(short(ct));
            }
            None => p.extend([0, 0]),
        }
        self.frame(HEADER, channel, &p)
    }

    pub(crate) fn body(self, channel: u16, b: &[u8]) -> Self {
        self.frame(BODY, channel, b)
    }
}

pub(crate) fn short(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// queue.declare arguments: reserved, name, flags, empty table.
fn declare(q: &str, flags: u8) -> Vec<u8> {
    [&[0, 0][..], &short(q), &[flags, 0, 0, 0, 0]].concat()
}

fn publish(rk: &str) -> Vec<u8> {
    [&[0, 0][..], &short(""), &short(rk), &[0]].concat()
}

fn parser(f: impl FnOnce(&mut Entry<Options>)) -> Box<dyn TcpParser> {
    let mut e = Entry::<Options>::default();
    f(&mut e);
    <Proto as super::super::Protocol>::parsers(&e, &common())
        .tcp
        .unwrap()()
}

#[test]
fn declare_pairs_with_its_ok_and_publish_is_one_event_with_its_body() {
    let mut p = parser(|e| e.common.send_request = true);
    let c = Frames::default()
        .method(1, 50, 10, &declare("hello", 0))
        .method(1, 60, 40, &publish("hello"))
        .header(1, 5, Some("text/plain"))
        .body(1, b"hello");
    let s = Frames::default().method(
        1,
        50,
        11,
        &[&short("hello")[..], &[0, 0, 0, 0, 0, 0, 0, 1]].concat(),
    );
    let mut msgs = vec![(Dir::ToServer, &b"AMQP\0\0\x09\x01"[..])];
    let (decl, rest) = c.0.split_at(HEAD + 4 + 13 + 1);
    msgs.push((Dir::ToServer, decl));
    msgs.push((Dir::ToClient, &s.0));
    msgs.push((Dir::ToServer, rest));
    for split in [1, 3, 1000] {
        let out = drive(p.as_mut(), &msgs, split);
        assert_eq!(out.len(), 2, "split {split}");
        assert_eq!(out[0].method.as_deref(), Some("queue.declare"));
        assert_eq!(out[0].status, status::OK);
        assert_eq!(out[0].request.as_deref(), Some("queue.declare hello"));
        assert_eq!(out[0].bytes_in, 25);
        assert_eq!(out[0].bytes_out, 26);
        let o = out[0].object();
        assert_eq!(o["queue"], "hello");
        assert_eq!(o["durable"], false);
        assert_eq!(o["consumer-count"], 1);
        assert_eq!(out[1].method.as_deref(), Some("basic.publish"));
        assert_eq!(out[1].request.as_deref(), Some("hello"));
        assert_eq!(out[1].bytes_in, 5);
        assert_eq!(out[1].end, None);
        let o = out[1].object();
        assert_eq!(o["routing-key"], "hello");
        assert_eq!(o["content-type"], "text/plain");
        assert!(
            o.get("exchange").is_none(),
            "the default exchange is not named"
        );
        p = parser(|e| e.common.send_request = true);
    }
}

#[test]
fn a_channel_close_with_an_error_replaces_the_request_and_is_an_error() {
    let mut p = parser(|_| {});
    let bind = [
        &[0, 0][..],
        &short("q"),
        &short("plop"),
        &short(""),
        &[0, 0, 0, 0, 0],
    ]
    .concat();
    let close = [
        &[1, 0x94][..],
        &short("NOT_FOUND - no exchange 'plop' in vhost '/'"),
        &[0, 50, 0, 20],
    ]
    .concat();
    let c1 = Frames::default().method(1, 50, 20, &bind);
    let s = Frames::default().method(1, 20, 40, &close);
    let c2 = Frames::default().method(1, 20, 41, &[]);
    let before = monitor::get(&METRICS.inspect_amqp_requests_replaced);
    let out = drive(
        p.as_mut(),
        &[
            (Dir::ToServer, &c1.0),
            (Dir::ToClient, &s.0),
            (Dir::ToServer, &c2.0),
        ],
        7,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].method.as_deref(), Some("channel.close"));
    assert_eq!(out[0].status, status::ERROR);
    let o = out[0].object();
    assert_eq!(o["reply-code"], 404);
    assert_eq!(
        (o["class-id"].clone(), o["method-id"].clone()),
        (50.into(), 20.into())
    );
    assert!(monitor::get(&METRICS.inspect_amqp_requests_replaced) > before);
}

#[test]
fn a_connection_close_with_an_error_code_is_an_error() {
    // The broker closes the connection: 320 when it shuts down, 530 in answer to a
    // connection.open of a virtual host the user may not use (the open itself is setup,
    // replaced by the close when shown). A reply code under 300 is a normal close.
    let open = [&short("prod")[..], &short(""), &[0]].concat();
    let cases: [(u16, &str, bool, &str); 3] = [
        (
            320,
            "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
            false,
            status::ERROR,
        ),
        (
            530,
            "NOT_ALLOWED - access to vhost 'prod' refused for user 'guest'",
            true,
            status::ERROR,
        ),
        (200, "Goodbye", false, status::OK),
    ];
    for (code, text, after_open, want) in cases {
        let close = [&code.to_be_bytes()[..], &short(text), &[0, 0, 0, 0]].concat();
        let cli = Frames::default().method(0, 10, 40, &open);
        let srv = Frames::default().method(0, 10, 50, &close);
        let close_ok = Frames::default().method(0, 10, 51, &[]);
        let mut msgs = vec![
            (Dir::ToClient, &srv.0[..]),
            (Dir::ToServer, &close_ok.0[..]),
        ];
        if after_open {
            msgs.insert(0, (Dir::ToServer, &cli.0[..]));
        }
        for hide in [true, false] {
            let mut p = parser(|e| {
                e.options.hide_connection_information = hide;
                e.common.send_request = true;
            });
            let out = drive(p.as_mut(), &msgs, 5);
            if hide && want == status::OK {
                assert!(out.is_empty(), "{code}: {out:?}");
                continue;
            }
            assert_eq!(out.len(), 1, "{code} hide {hide}: {out:?}");
            let t = &out[0];
            assert_eq!(t.method.as_deref(), Some("connection.close"), "{code}");
            assert_eq!(t.status, want, "{code} hide {hide}");
            assert_eq!(t.request.as_deref(), Some("connection.close"));
            assert!(t.end.is_some(), "{code}: paired with its close-ok");
            // Sent by the server: its bytes out, the client's close-ok in.
            assert_eq!(t.bytes_out, close.len() as u64 + 4 + 8);
            assert_eq!(t.bytes_in, 4 + 8);
            let o = t.object();
            assert_eq!(o["reply-code"], code, "{code}");
            assert_eq!(o["reply-text"], text, "{code}");
            assert_eq!(
                (o["class-id"].clone(), o["method-id"].clone()),
                (0.into(), 0.into())
            );
        }
    }
}

#[test]
fn normal_closes_and_connection_setup_are_hidden_unless_asked() {
    let start_ok = [
        &[0, 0, 0, 0][..],
        &short("PLAIN"),
        &[0, 0, 0, 14],
        b"\0guest\0hunter2",
        &short("en_US"),
    ]
    .concat();
    let close = [&[0, 200][..], &short("kthxbai"), &[0, 0, 0, 0]].concat();
    let start = [
        &[0, 9][..],
        &[0, 0, 0, 0],
        &[0, 0, 0, 5],
        b"PLAIN",
        &[0, 0, 0, 5],
        b"en_US",
    ]
    .concat();
    let srv = Frames::default()
        .method(0, 10, 10, &start)
        .method(0, 10, 51, &[]);
    let cli = Frames::default()
        .method(0, 10, 11, &start_ok)
        .method(0, 10, 50, &close);
    let (s1, s2) = srv.0.split_at(start.len() + 12);
    let (c1, c2) = cli.0.split_at(start_ok.len() + 12);
    let msgs = [
        (Dir::ToClient, s1),
        (Dir::ToServer, c1),
        (Dir::ToServer, c2),
        (Dir::ToClient, s2),
    ];
    let unmatched = monitor::get(&METRICS.inspect_unmatched_responses);
    let out = drive(parser(|_| {}).as_mut(), &msgs, 5);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        monitor::get(&METRICS.inspect_unmatched_responses),
        unmatched
    );
    let out = drive(
        parser(|e| e.options.hide_connection_information = false).as_mut(),
        &msgs,
        5,
    );
    let m: Vec<_> = out.iter().map(|t| t.method.clone().unwrap()).collect();
    assert_eq!(m, ["connection.start", "connection.close"]);
    let o = out[0].object();
    assert_eq!(o["mechanism"], "PLAIN");
    assert_eq!(o["mechanisms"], "PLAIN");
    assert_eq!(o["version-minor"], 9);
    let all = format!("{:?} {}", out, o);
    assert!(!all.contains("hunter2") && !all.contains("guest"), "{all}");
    assert_eq!(out[1].status, status::OK);
}

#[test]
fn messages_interleave_across_channels_and_long_bodies_are_cut() {
    let deliver = |tag: u8| {
        [
            &short("ctag")[..],
            &[0, 0, 0, 0, 0, 0, 0, tag, 0],
            &short("ex"),
            &short("rk"),
        ]
        .concat()
    };
    let big = vec![b'x'; 3000];
    let s = Frames::default()
        .method(1, 60, 60, &deliver(1))
        .method(2, 60, 60, &deliver(2))
        .header(2, 2, None)
        .header(1, 3000, Some("application/json"))
        .body(1, &big[..1500])
        .body(2, &[7, 8])
        .body(1, &big[1500..]);
    let mut p = parser(|e| {
        e.common.send_response = true;
        e.options.max_body_length = 10;
    });
    let out = drive(p.as_mut(), &[(Dir::ToClient, &s.0)], 100);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].method.as_deref(), Some("basic.deliver"));
    assert_eq!(out[0].object()["delivery-tag"], 2);
    assert_eq!(out[0].response.as_deref(), Some("7 8"));
    assert_eq!(out[1].object()["delivery-tag"], 1);
    assert_eq!(out[1].object()["exchange"], "ex");
    assert_eq!(out[1].bytes_out, 3000);
    assert_eq!(out[1].response.as_deref(), Some("xxxxxxxxxx [...]"));
}

#[test]
fn get_ok_completes_the_get_and_acks_are_alone() {
    let get = [&[0, 0][..], &short("q"), &[0]].concat();
    let get_ok = [
        &[0, 0, 0, 0, 0, 0, 0, 9, 0][..],
        &short(""),
        &short("q"),
        &[0, 0, 0, 4],
    ]
    .concat();
    let c = Frames::default().method(1, 60, 70, &get);
    let s = Frames::default()
        .method(1, 60, 71, &get_ok)
        .header(1, 2, Some("text/plain"))
        .body(1, b"hi")
        .method(1, 60, 70, &get)
        .method(1, 60, 72, &[0]);
    let c2 = Frames::default()
        .method(1, 60, 80, &[0, 0, 0, 0, 0, 0, 0, 9, 0])
        .method(1, 60, 90, &[0, 0, 0, 0, 0, 0, 0, 10, 0]);
    let (s1, s2) = s.0.split_at(s.0.len() - 13);
    let msgs = [
        (Dir::ToServer, &c.0[..]),
        (Dir::ToClient, s1),
        (Dir::ToServer, &c.0[..]),
        (Dir::ToClient, s2),
        (Dir::ToServer, &c2.0[..]),
    ];
    let out = drive(parser(|e| e.common.send_response = true).as_mut(), &msgs, 4);
    let m: Vec<_> = out.iter().map(|t| t.method.clone().unwrap()).collect();
    assert_eq!(
        m,
        ["basic.get", "basic.get-empty", "basic.ack", "basic.reject"]
    );
    assert_eq!(out[0].response.as_deref(), Some("hi"));
    let o = out[0].object();
    assert_eq!(
        (o["queue"].clone(), o["message-count"].clone()),
        ("q".into(), 4.into())
    );
    assert!(out[0].end.is_some());
    assert_eq!(out[0].bytes_out, 2);
    assert_eq!(
        out[3].status,
        status::ERROR,
        "a rejected message is an error"
    );
}

#[test]
fn no_wait_methods_are_published_at_once() {
    let decl = [
        &[0, 0][..],
        &short("titres"),
        &short("fanout"),
        &[0b10010, 0, 0, 0, 0],
    ]
    .concat();
    let out = drive(
        parser(|_| {}).as_mut(),
        &[(Dir::ToServer, &Frames::default().method(1, 40, 10, &decl).0)],
        1000,
    );
    assert_eq!(out.len(), 1);
    let o = out[0].object();
    assert_eq!(o["exchange-type"], "fanout");
    assert_eq!(
        (o["durable"].clone(), o["no-wait"].clone()),
        (true.into(), true.into())
    );
}

#[test]
fn a_hole_in_a_body_is_skipped_and_noted() {
    let s = Frames::default()
        .method(
            1,
            60,
            60,
            &[&short("t")[..], &[0; 9], &short(""), &short("rk")].concat(),
        )
        .header(1, 100, None)
        .body(1, &[1; 100]);
    let mut p = parser(|_| {});
    let mut out = Vec::new();
    let mut cx = Cx {
        now: 1,
        timeout: 1_000_000,
        out: &mut out,
    };
    let cut = s.0.len() - 51;
    let mut at = 0;
    while at < cut {
        let n = p.parse(Dir::ToClient, &s.0[at..cut], &mut cx).unwrap();
        assert!(n > 0);
        at += n;
    }
    assert_eq!(p.gap(Dir::ToClient, 40, &mut cx), GapAction::Continue);
    let mut at = cut + 40;
    while at < s.0.len() {
        at += p.parse(Dir::ToClient, &s.0[at..], &mut cx).unwrap();
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].notes, [NOTE_BODY_GAP]);
    assert_eq!(out[0].bytes_out, 100);
}

#[test]
fn frames_are_found_again_after_garbage_and_a_gap() {
    let good = Frames::default()
        .method(1, 50, 10, &declare("a", 0))
        .method(1, 50, 10, &declare("b", 0));
    let ok = |q: &str| Frames::default().method(1, 50, 11, &[&short(q)[..], &[0; 8]].concat());
    let mut garbage = vec![0x55u8; 300];
    garbage[10] = METHOD; // a false start that must not take
    let mut p = parser(|_| {});
    let mut out = Vec::new();
    let mut cx = Cx {
        now: 1,
        timeout: 1_000_000,
        out: &mut out,
    };
    assert!(p.parse(Dir::ToServer, &garbage, &mut cx).is_err());
    assert_eq!(p.gap(Dir::ToServer, 0, &mut cx), GapAction::Reset);
    let second = &good.0[good.0.len() / 2..];
    let mut buf = [&garbage[..], second].concat();
    loop {
        let n = p.parse(Dir::ToServer, &buf, &mut cx).unwrap();
        if n == 0 {
            break;
        }
        buf.drain(..n.min(buf.len()));
        if buf.is_empty() {
            break;
        }
    }
    let r = ok("b").0;
    let mut at = 0;
    while at < r.len() {
        at += p.parse(Dir::ToClient, &r[at..], &mut cx).unwrap();
    }
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].object()["queue"], "b");
}

#[test]
fn ecs_events_have_the_action_and_the_user_id() {
    use crate::inspect::proto::txn::{EcsSettings, Endpoints};
    let mut t: Txn<AmqpTxn> = Txn::new(1_000_000, 10);
    t.method = Some("basic.publish".into());
    t.fields.user_id = Some("guest".into());
    let ep = Endpoints::new(
        "tcp",
        "10.0.0.1:5000".parse().unwrap(),
        "10.0.0.2:5672".parse().unwrap(),
    );
    let s = EcsSettings::default();
    let e = t.into_ecs_event("amqp", &ep, &s).to_value();
    assert_eq!(e["event"]["action"], "amqp.basic.publish");
    assert_eq!(e["user"]["id"], "guest");
    assert_eq!(e["amqp"]["user-id"], "guest");
}

#[test]
fn messages_in_progress_and_waiting_requests_are_bounded() {
    // 50 channels each start a message and a request that never finish.
    let mut f = Frames::default();
    for ch in 1..=50 {
        f = f
            .method(ch, 60, 40, &publish("rk"))
            .header(ch, 10, None)
            .method(ch, 50, 10, &declare("q", 0));
    }
    let mut p = Amqp::new(Arc::new(Settings {
        o: Options::default(),
        send: [false, false],
        max_pending: 8,
    }));
    let mut out = Vec::new();
    let mut cx = Cx {
        now: 1,
        timeout: 1_000_000,
        out: &mut out,
    };
    let dropped = monitor::get(&METRICS.inspect_amqp_content_dropped);
    let mut at = 0;
    while at < f.0.len() {
        at += p.parse(Dir::ToServer, &f.0[at..], &mut cx).unwrap();
    }
    assert_eq!(p.sides[0].contents.len(), 8);
    assert_eq!(p.pending.len(), 8);
    assert!(monitor::get(&METRICS.inspect_amqp_content_dropped) >= dropped + 42);
    assert_eq!(out.len(), 42, "the oldest waiting requests failed");
    assert!(out.iter().all(|t| t.status == status::ERROR));
}
