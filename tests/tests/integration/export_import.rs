//! Export and import by name: typed imports, hangup from either side, work
//! sharing and merging, `import_receiver_n`, drain, and the exporter's
//! sync and shutdown.

use netchan::proto::{Dir, Frame};
use netchan::{Error, Exporter, RecvError, SendError, Session};
use serde::{Deserialize, Serialize};

use crate::support::*;

/// Two programs that each define their own `Job`: same name, same shape.
mod app_one {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Job {
        pub(crate) id: u32,
        pub(crate) name: String,
    }
}

mod app_two {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Job {
        pub(crate) id: u32,
        pub(crate) name: String,
    }
}

/// A third program whose `Job` has the same name but another shape.
mod app_three {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Job {
        pub(crate) a: u64,
        pub(crate) b: u64,
        pub(crate) c: String,
    }
}

/// A unit message for barriers.
#[derive(Debug, Serialize, Deserialize)]
struct Mark;

/// Returns once every frame `from` sent to `to` before this call has been
/// read by `to`: a message on a fresh channel of the same connection
/// follows them on the stream.
async fn barrier(from_hub: bool, hub: &Hub, importer: &Session) {
    let name = unique("barrier");
    if from_hub {
        let tx = hub.export_sender::<Mark>(&name).expect("export barrier");
        let mut rx = within("import barrier", importer.import_receiver::<Mark>(&name, 1))
            .await
            .expect("import barrier");
        send_ok("barrier", &tx, Mark).await;
        recv_some("barrier", &mut rx).await;
    } else {
        let mut rx = hub
            .export_receiver::<Mark>(&name, 1)
            .expect("export barrier");
        let tx = within("import barrier", importer.import_sender::<Mark>(&name))
            .await
            .expect("import barrier");
        send_ok("barrier", &tx, Mark).await;
        recv_some("barrier", &mut rx).await;
    }
}

// ------------------------------------------------------------- typed imports

async fn importing_an_unknown_name_fails_with_no_such_export(t: Transport) {
    let (_a, b) = t.connect().await;
    match within("import", b.import_receiver::<u32>("nobody-exports-this", 1)).await {
        Err(Error::NoSuchExport(name)) => assert_eq!(name, "nobody-exports-this"),
        other => panic!("expected NoSuchExport, got {other:?}"),
    }
    match within("import", b.import_sender::<u32>("nor-this")).await {
        Err(Error::NoSuchExport(name)) => assert_eq!(name, "nor-this"),
        other => panic!("expected NoSuchExport, got {other:?}"),
    }
}
over_both!(importing_an_unknown_name_fails_with_no_such_export);

async fn importing_the_wrong_direction_fails_with_wrong_direction(t: Transport) {
    let (a, b) = t.connect().await;
    let _tx = a.export_sender::<u32>("outbound").expect("export");
    let _rx = a.export_receiver::<u32>("inbound", 1).expect("export");
    match within("import", b.import_sender::<u32>("outbound")).await {
        Err(Error::WrongDirection {
            name,
            expected,
            actual,
        }) => {
            assert_eq!(name, "outbound");
            assert_eq!((expected, actual), ("receiver", "sender"));
        }
        other => panic!("expected WrongDirection, got {other:?}"),
    }
    match within("import", b.import_receiver::<u32>("inbound", 1)).await {
        Err(Error::WrongDirection {
            name,
            expected,
            actual,
        }) => {
            assert_eq!(name, "inbound");
            assert_eq!((expected, actual), ("sender", "receiver"));
        }
        other => panic!("expected WrongDirection, got {other:?}"),
    }
}
over_both!(importing_the_wrong_direction_fails_with_wrong_direction);

async fn importing_another_message_type_fails_with_wrong_type(t: Transport) {
    let (a, b) = t.connect().await;
    let tx = a.export_sender::<String>("names").expect("export");
    let mut rx = a.export_receiver::<Vec<u32>>("numbers", 1).expect("export");
    match within("import", b.import_receiver::<u64>("names", 1)).await {
        Err(Error::WrongType {
            name,
            expected,
            actual,
        }) => {
            assert_eq!(name, "names");
            assert_eq!((expected.as_str(), actual.as_str()), ("u64", "String"));
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    match within("import", b.import_sender::<Vec<i32>>("numbers")).await {
        Err(Error::WrongType {
            name,
            expected,
            actual,
        }) => {
            assert_eq!(name, "numbers");
            assert_eq!(
                (expected.as_str(), actual.as_str()),
                ("Vec<i32>", "Vec<u32>")
            );
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    // Failed imports leave the session and the exports usable.
    let mut names = within("import", b.import_receiver::<String>("names", 1))
        .await
        .expect("import with the right type");
    let numbers = within("import", b.import_sender::<Vec<u32>>("numbers"))
        .await
        .expect("import with the right type");
    send_ok("send", &tx, "ok".to_string()).await;
    assert_eq!(recv_some("recv", &mut names).await, "ok");
    send_ok("send", &numbers, vec![1, 2]).await;
    assert_eq!(recv_some("recv", &mut rx).await, vec![1, 2]);
}
over_both!(importing_another_message_type_fails_with_wrong_type);

async fn types_of_the_same_name_in_different_modules_match(t: Transport) {
    let (a, b) = t.connect().await;
    let tx = a
        .export_sender::<Vec<app_one::Job>>("jobs")
        .expect("export");
    let mut rx = within("import", b.import_receiver::<Vec<app_two::Job>>("jobs", 1))
        .await
        .expect("Vec<Job> matches Vec<Job> whatever the module");
    let jobs = vec![
        app_one::Job {
            id: 1,
            name: "compress".into(),
        },
        app_one::Job {
            id: 2,
            name: "upload".into(),
        },
    ];
    send_ok("send jobs", &tx, jobs).await;
    let got = recv_some("recv jobs", &mut rx).await;
    assert_eq!(
        got,
        vec![
            app_two::Job {
                id: 1,
                name: "compress".into()
            },
            app_two::Job {
                id: 2,
                name: "upload".into()
            },
        ]
    );
}
over_both!(types_of_the_same_name_in_different_modules_match);

async fn a_structural_difference_the_name_misses_fails_at_the_first_decode(t: Transport) {
    let (a, b) = t.connect().await;
    let mut errors = b.errors();
    let tx = a.export_sender::<app_one::Job>("job").expect("export");
    let mut rx = within("import", b.import_receiver::<app_three::Job>("job", 2))
        .await
        .expect("the names match, so the import succeeds");
    send_ok(
        "send",
        &tx,
        app_one::Job {
            id: 1,
            name: "x".into(),
        },
    )
    .await;
    match within("recv", rx.recv()).await {
        Err(RecvError::Decode(_)) => {}
        other => panic!("expected a decode error, never a garbage value: {other:?}"),
    }
    match next_error(
        "the receiving session reports the decode error",
        &mut errors,
    )
    .await
    {
        Error::Codec(_) => {}
        e => panic!("expected a codec error, got {e:?}"),
    }
}
over_both!(a_structural_difference_the_name_misses_fails_at_the_first_decode);

async fn either_end_of_a_connection_may_export_and_import(t: Transport) {
    let (a, b) = t.connect().await;
    let to_b = a
        .export_sender::<String>("to-b")
        .expect("export on the dialler");
    let to_a = b
        .export_sender::<String>("to-a")
        .expect("export on the acceptor");
    let mut at_b = within("import on b", b.import_receiver::<String>("to-b", 1))
        .await
        .expect("import");
    let mut at_a = within("import on a", a.import_receiver::<String>("to-a", 1))
        .await
        .expect("import");
    send_ok("a to b", &to_b, "hello b".into()).await;
    send_ok("b to a", &to_a, "hello a".into()).await;
    assert_eq!(recv_some("at b", &mut at_b).await, "hello b");
    assert_eq!(recv_some("at a", &mut at_a).await, "hello a");
}
over_both!(either_end_of_a_connection_may_export_and_import);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporting_a_live_name_twice_fails_with_already_exported() {
    bounded(async {
        let (a, _b) = Session::pair();
        let tx = a.export_sender::<u32>("once").expect("first export");
        match a.export_receiver::<u32>("once", 1) {
            Err(Error::AlreadyExported(name)) => assert_eq!(name, "once"),
            other => panic!("expected AlreadyExported, got {other:?}"),
        }
        let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
        let _rx = exp.export_receiver::<u32>("once", 1).expect("first export");
        assert!(matches!(
            exp.export_sender::<u32>("once"),
            Err(Error::AlreadyExported(_))
        ));
        // Once the first sender is gone, the name is free again.
        drop(tx);
        a.export_sender::<u32>("once")
            .expect("re-export after the sender was dropped");
    })
    .await;
}

// -------------------------------------------------------------------- hangup

async fn hangup_of_an_exported_sender_ends_its_importers_after_the_values_sent(t: Transport) {
    let (hub, imps) = t.hub(1).await;
    let name = unique("out");
    let tx = hub.export_sender::<u32>(&name).expect("export");
    let mut rx = within("import", imps[0].import_receiver::<u32>(&name, 4))
        .await
        .expect("import");
    for i in 0..3 {
        send_ok("send before hangup", &tx, i).await;
    }
    hub.hangup(&name).expect("hangup");
    for i in 0..3 {
        assert_eq!(recv_some("value sent before the hangup", &mut rx).await, i);
    }
    recv_end("hung up cleanly", &mut rx).await;
    match within("send after hangup", tx.send(9)).await {
        Err(SendError(v, _)) => assert_eq!(v, 9),
        Ok(()) => panic!("a send on a hung-up export succeeded"),
    }
    match within(
        "import after hangup",
        imps[0].import_receiver::<u32>(&name, 1),
    )
    .await
    {
        Err(Error::NoSuchExport(_)) => {}
        other => panic!("a hung-up name is withdrawn; got {other:?}"),
    }
}
over_both!(hangup_of_an_exported_sender_ends_its_importers_after_the_values_sent);

async fn hangup_of_an_exported_receiver_ends_it_and_fails_the_importers_sends(t: Transport) {
    let (hub, imps) = t.hub(1).await;
    let name = unique("in");
    let mut rx = hub.export_receiver::<u32>(&name, 4).expect("export");
    let tx = within("import", imps[0].import_sender::<u32>(&name))
        .await
        .expect("import");
    send_ok("send", &tx, 0).await;
    send_ok("send", &tx, 1).await;
    barrier(false, &hub, &imps[0]).await;
    hub.hangup(&name).expect("hangup");
    assert_eq!(recv_some("buffered", &mut rx).await, 0);
    assert_eq!(recv_some("buffered", &mut rx).await, 1);
    recv_end("hung up cleanly", &mut rx).await;
    within("the importer's sends start failing", async {
        let mut v = 100;
        loop {
            match tx.send(v).await {
                Ok(()) => v += 1,
                Err(SendError(back, _)) => {
                    assert_eq!(back, v, "the value comes back");
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
}
over_both!(hangup_of_an_exported_receiver_ends_it_and_fails_the_importers_sends);

async fn hangup_of_an_imported_receiver_ends_it_after_the_buffered_values(t: Transport) {
    let (hub, imps) = t.hub(1).await;
    let name = unique("out");
    let tx = hub.export_sender::<u32>(&name).expect("export");
    let mut rx = within("import", imps[0].import_receiver::<u32>(&name, 4))
        .await
        .expect("import");
    send_ok("send", &tx, 0).await;
    send_ok("send", &tx, 1).await;
    barrier(true, &hub, &imps[0]).await;
    imps[0].hangup(&name).expect("hangup on the importing side");
    assert_eq!(recv_some("buffered", &mut rx).await, 0);
    assert_eq!(recv_some("buffered", &mut rx).await, 1);
    recv_end("hung up from the importing side", &mut rx).await;
}
over_both!(hangup_of_an_imported_receiver_ends_it_after_the_buffered_values);

async fn hangup_of_an_imported_sender_fails_its_later_sends(t: Transport) {
    let (hub, imps) = t.hub(1).await;
    let name = unique("in");
    let mut rx = hub.export_receiver::<u32>(&name, 4).expect("export");
    let tx = within("import", imps[0].import_sender::<u32>(&name))
        .await
        .expect("import");
    send_ok("send", &tx, 0).await;
    send_ok("send", &tx, 1).await;
    imps[0].hangup(&name).expect("hangup on the importing side");
    match within("send after hangup", tx.send(2)).await {
        Err(SendError(v, _)) => assert_eq!(v, 2),
        Ok(()) => panic!("a send after hangup() returned succeeded"),
    }
    assert_eq!(recv_some("sent before the hangup", &mut rx).await, 0);
    assert_eq!(recv_some("sent before the hangup", &mut rx).await, 1);
    receives_nothing(
        "an exported receiver outlives an importer's hangup",
        &mut rx,
    )
    .await;
}
over_both!(hangup_of_an_imported_sender_fails_its_later_sends);

async fn hangup_of_an_unknown_name_fails_with_not_found(t: Transport) {
    let (hub, imps) = t.hub(1).await;
    assert!(
        matches!(hub.hangup("never-exported"), Err(Error::NotFound(n)) if n == "never-exported")
    );
    assert!(matches!(
        imps[0].hangup("never-imported"),
        Err(Error::NotFound(_))
    ));
}
over_both!(hangup_of_an_unknown_name_fails_with_not_found);

// ------------------------------------------------------- sharing and merging

async fn an_exported_sender_gives_each_value_to_exactly_one_importer(t: Transport) {
    const N: u32 = 60;
    let (hub, imps) = t.hub(3).await;
    let name = unique("work");
    let tx = hub.export_sender::<u32>(&name).expect("export");
    let mut rxs = Vec::new();
    for s in &imps {
        rxs.push(
            within("import", s.import_receiver::<u32>(&name, 2))
                .await
                .expect("import"),
        );
    }
    // Three importers with two slots each: six sends complete with no
    // recv at all, the seventh waits for room.
    for i in 0..6 {
        send_ok("send into free credit", &tx, i).await;
    }
    let mut seventh = Box::pin(tx.send(6));
    stays_pending("a seventh send with every importer full", &mut seventh).await;
    // So each importer holds exactly two.
    let mut got = Vec::new();
    for rx in &mut rxs {
        got.push(recv_some("first of two", rx).await);
        got.push(recv_some("second of two", rx).await);
    }
    within("seventh send", &mut seventh)
        .await
        .expect("seventh send");
    drop(seventh);
    let consumers: Vec<_> = rxs
        .into_iter()
        .map(|mut rx| {
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(v) = rx.recv().await.expect("recv") {
                    mine.push(v);
                }
                mine
            })
        })
        .collect();
    for i in 7..N {
        send_ok("send", &tx, i).await;
    }
    drop(tx);
    for c in consumers {
        let mine = within("consumer ends once the sender is gone", c)
            .await
            .expect("consumer");
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "each importer sees its share in order: {mine:?}"
        );
        got.extend(mine);
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "every value delivered exactly once"
    );
}
over_both!(an_exported_sender_gives_each_value_to_exactly_one_importer);

/// Sends that found every importer full pass those importers by until
/// they have room again: room freed at one importer lets exactly the
/// waiting send in, there, whatever the buffer size.
async fn an_importer_found_full_takes_values_again_once_it_has_room(t: Transport) {
    for cap in [1usize, 2, 4, 7] {
        let (hub, imps) = t.hub(3).await;
        let name = unique("room");
        let tx = hub.export_sender::<usize>(&name).expect("export");
        let mut rxs = Vec::new();
        for s in &imps {
            rxs.push(
                within("import", s.import_receiver::<usize>(&name, cap))
                    .await
                    .expect("import"),
            );
        }
        let full = 3 * cap;
        for i in 0..full {
            send_ok("send into free credit", &tx, i).await;
        }
        // This send finds all three full.
        let mut waiting = Box::pin(tx.send(full));
        stays_pending("a send with every importer full", &mut waiting).await;
        // Room at the second importer: the waiting send goes there.
        let first = recv_some("a value from the second importer", &mut rxs[1]).await;
        within(
            format!("the waiting send, capacity {cap}").as_str(),
            &mut waiting,
        )
        .await
        .expect("send");
        let mut waiting = Box::pin(tx.send(full + 1));
        stays_pending("a send with every importer full again", &mut waiting).await;
        // Room at the first importer, passed by since it was found full.
        let second = recv_some("a value from the first importer", &mut rxs[0]).await;
        within("the second waiting send", &mut waiting)
            .await
            .expect("send");
        drop(waiting);
        let mut got = vec![first, second];
        let mut last = Vec::new();
        for rx in &mut rxs {
            let mut mine = Vec::new();
            for _ in 0..cap {
                mine.push(recv_some("a buffered value", rx).await);
            }
            last.push(*mine.last().expect("a value"));
            got.extend(mine);
        }
        assert_eq!(
            last[..2],
            [full + 1, full],
            "capacity {cap}: each waiting send went to the importer that made room"
        );
        got.sort_unstable();
        assert_eq!(
            got,
            (0..full + 2).collect::<Vec<_>>(),
            "capacity {cap}: every value delivered exactly once"
        );
    }
}
over_both!(an_importer_found_full_takes_values_again_once_it_has_room);

async fn an_exported_receiver_merges_the_values_of_every_importer(t: Transport) {
    const PER: u32 = 50;
    let (hub, imps) = t.hub(3).await;
    let name = unique("results");
    let mut rx = hub
        .export_receiver::<(usize, u32)>(&name, 4)
        .expect("export");
    let mut producers = Vec::new();
    for (k, s) in imps.iter().enumerate() {
        let tx = within("import", s.import_sender::<(usize, u32)>(&name))
            .await
            .expect("import");
        producers.push(tokio::spawn(async move {
            for i in 0..PER {
                tx.send((k, i)).await.expect("send");
            }
        }));
    }
    let mut next = [0u32; 3];
    for _ in 0..3 * PER {
        let (k, i) = recv_some("merged value", &mut rx).await;
        assert_eq!(i, next[k], "importer {k}'s values keep their order");
        next[k] += 1;
    }
    assert_eq!(next, [PER; 3]);
    for p in producers {
        within("producer", p).await.expect("producer");
    }
    receives_nothing(
        "importers dropping their senders do not end an exported receiver",
        &mut rx,
    )
    .await;
}
over_both!(an_exported_receiver_merges_the_values_of_every_importer);

async fn import_receiver_n_takes_exactly_n_values_and_leaves_the_rest_to_others(t: Transport) {
    let (hub, imps) = t.hub(2).await;
    let name = unique("n");
    let tx = hub.export_sender::<u32>(&name).expect("export");
    let mut three = within("import n", imps[0].import_receiver_n::<u32>(&name, 2, 3))
        .await
        .expect("import n");
    let mut producer = tokio::spawn(async move {
        for i in 0..10 {
            tx.send(i).await.expect("send");
        }
    });
    for i in 0..3 {
        assert_eq!(recv_some("one of n", &mut three).await, i);
    }
    recv_end("exactly n values, then the end", &mut three).await;
    stays_pending(
        "the exporter never sends a fourth value to an importer of three",
        &mut producer,
    )
    .await;
    let mut rest = within("import", imps[1].import_receiver::<u32>(&name, 4))
        .await
        .expect("import");
    for i in 3..10 {
        assert_eq!(
            recv_some("the rest go to the other importer", &mut rest).await,
            i
        );
    }
    within("producer", producer).await.expect("producer");
    recv_end("sender dropped", &mut rest).await;
}
over_both!(import_receiver_n_takes_exactly_n_values_and_leaves_the_rest_to_others);

// ---------------------------------------------------------------- drain/sync

async fn drain_waits_for_arrival_not_for_the_receiving_program(t: Transport) {
    for cap in [1usize, 2, 4, 8, 64] {
        let (hub, imps) = t.hub(1).await;
        let name = unique("drain");
        let tx = hub.export_sender::<u32>(&name).expect("export");
        let mut rx = within("import", imps[0].import_receiver::<u32>(&name, cap))
            .await
            .expect("import");
        let k = cap.min(5) as u32;
        for i in 0..k {
            send_ok("send", &tx, i).await;
        }
        // Go's Drain returns once the importer has the values: nothing
        // has been taken yet.
        within("drain before any recv", hub.drain(Some(LIMIT)))
            .await
            .unwrap_or_else(|e| panic!("capacity {cap}: drain waits for arrival only: {e}"));
        for i in 0..k {
            assert_eq!(recv_some("recv after drain", &mut rx).await, i);
        }
    }
}
over_both!(drain_waits_for_arrival_not_for_the_receiving_program);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_sync_waits_only_for_the_arrival_of_values_sent_before_it() {
    bounded(async {
        let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
        let tx = exp.export_sender::<u32>("jobs").expect("export");
        // An importer that confirms arrivals only when told to.
        let mut raw = RawPeer::connect(exp.local_addr()).await;
        raw.read_hello().await;
        raw.write(&hello_bytes()).await.expect("hello");
        raw.send(&[Frame::Open {
            chan: 1,
            dir: Dir::OpenerReceives,
            capacity: 4,
            name: "jobs".into(),
            type_name: "u32".into(),
        }])
        .await;
        assert_eq!(
            raw.expect_frame("the exporter accepts").await,
            Frame::Accept {
                chan: 1,
                capacity: 0
            }
        );
        send_ok("send", &tx, 0).await;
        send_ok("send", &tx, 1).await;
        for _ in 0..2 {
            assert!(matches!(
                raw.expect_frame("a value").await,
                Frame::Data { chan: 1, .. }
            ));
        }
        let mut sync = Box::pin(exp.sync(Some(LIMIT)));
        stays_pending("sync before the importer confirmed arrival", &mut sync).await;
        send_ok("a send while sync waits", &tx, 2).await;
        assert!(matches!(
            raw.expect_frame("the third value").await,
            Frame::Data { chan: 1, .. }
        ));
        raw.send(&[Frame::Credit {
            chan: 1,
            grant: 0,
            received: 2,
        }])
        .await;
        within(
            "sync, though the value sent after it is unconfirmed",
            &mut sync,
        )
        .await
        .expect("sync");
        match within("drain", exp.drain(Some(QUIET))).await {
            Err(Error::Undelivered { count, .. }) => assert_eq!(count, 1),
            other => panic!("drain waits for every value: {other:?}"),
        }
        raw.send(&[Frame::Credit {
            chan: 1,
            grant: 0,
            received: 3,
        }])
        .await;
        within("drain", exp.drain(Some(LIMIT)))
            .await
            .expect("drain once all arrived");
        exp.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_drain_and_sync_return_before_anything_is_taken() {
    bounded(async {
        let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
        let tx = exp.export_sender::<u32>("jobs").expect("export");
        let s = within("connect", Session::connect(exp.local_addr()))
            .await
            .expect("connect");
        let mut rx = within("import", s.import_receiver::<u32>("jobs", 8))
            .await
            .expect("import");
        for i in 0..5 {
            send_ok("send", &tx, i).await;
        }
        within("sync", exp.sync(Some(LIMIT)))
            .await
            .expect("sync waits for arrival only");
        within("drain", exp.drain(Some(LIMIT)))
            .await
            .expect("drain waits for arrival only");
        for i in 0..5 {
            assert_eq!(recv_some("recv", &mut rx).await, i);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_shutdown_ends_exports_and_sessions_cleanly() {
    bounded(async {
        let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
        let addr = exp.local_addr();
        let mut inbox = exp.export_receiver::<u32>("in", 4).expect("export");
        let outbox = exp.export_sender::<u32>("out").expect("export");
        let s = within("connect", Session::connect(addr))
            .await
            .expect("connect");
        let tx = within("import", s.import_sender::<u32>("in"))
            .await
            .expect("import");
        let mut rx = within("import", s.import_receiver::<u32>("out", 4))
            .await
            .expect("import");
        send_ok("importer sends", &tx, 1).await;
        assert_eq!(recv_some("inbox", &mut inbox).await, 1);
        send_ok("exporter sends", &outbox, 10).await;
        send_ok("exporter sends", &outbox, 11).await;
        let mut errors = exp.errors();
        within("shutdown", exp.shutdown()).await;
        recv_end("the inbox ends", &mut inbox).await;
        assert_eq!(recv_some("buffered before shutdown", &mut rx).await, 10);
        assert_eq!(recv_some("buffered before shutdown", &mut rx).await, 11);
        recv_end("the importer's receiver ends cleanly", &mut rx).await;
        assert!(
            matches!(within("send", tx.send(2)).await, Err(SendError(2, _))),
            "the importer's sends fail with the value"
        );
        assert!(
            matches!(within("send", outbox.send(12)).await, Err(SendError(12, _))),
            "the exporter's own sends fail with the value"
        );
        assert!(
            within("connect after shutdown", Session::connect(addr))
                .await
                .is_err(),
            "no new sessions after shutdown"
        );
        use futures::StreamExt;
        assert!(
            within("errors() ends", errors.next()).await.is_none(),
            "a clean shutdown reports no errors and ends the stream"
        );
    })
    .await;
}
