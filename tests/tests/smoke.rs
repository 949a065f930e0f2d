use std::time::Duration;
use netchan::{Session, Exporter, channel, pipe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn pair_export_import_round_trip() {
    let (a, b) = Session::pair();
    let tx = a.export_sender::<String>("x").unwrap();
    let mut rx = b.import_receiver::<String>("x", 4).await.unwrap();
    tokio::spawn(async move {
        for i in 0..10 {
            tx.send(format!("m{i}")).await.unwrap();
        }
    });
    for i in 0..10 {
        assert_eq!(rx.recv().await.unwrap(), Some(format!("m{i}")));
    }
    assert_eq!(rx.recv().await.unwrap(), None);
}

#[tokio::test]
async fn tcp_channels_of_channels() {
    let exp = Exporter::bind("127.0.0.1:0").await.unwrap();
    let mut inbox = exp.export_receiver::<(u32, netchan::Sender<u32>)>("req", 4).unwrap();
    tokio::spawn(async move {
        while let Ok(Some((n, reply))) = inbox.recv().await {
            reply.send(n * 2).await.unwrap();
        }
    });
    let s = Session::connect(exp.local_addr()).await.unwrap();
    let tx = s.import_sender::<(u32, netchan::Sender<u32>)>("req").await.unwrap();
    for n in 0..20 {
        let (rtx, mut rrx) = channel::<u32>(1);
        tx.send((n, rtx)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rrx.recv()).await.unwrap().unwrap();
        assert_eq!(got, Some(n * 2));
    }
}

#[tokio::test]
async fn pipe_over_session() {
    let (a, b) = Session::pair();
    let mut inbox = a.export_receiver::<netchan::Pipe>("pipes", 1).unwrap();
    let tx = b.import_sender::<netchan::Pipe>("pipes").await.unwrap();
    let (mut mine, theirs) = pipe();
    tx.send(theirs).await.unwrap();
    let mut remote = inbox.recv().await.unwrap().unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    let d2 = data.clone();
    let w = tokio::spawn(async move {
        mine.write_all(&d2).await.unwrap();
        mine.shutdown().await.unwrap();
        mine
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), remote.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    w.await.unwrap();
}
