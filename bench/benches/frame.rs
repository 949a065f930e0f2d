//! Micro-benchmarks of netchan's sans-IO frame layer: `Frame::encode`,
//! `Frame::decode` and the `Hello`, so a regression in the codec shows up
//! without sockets or runtimes in the way.
//!
//! `cargo bench -p bench` runs them; `cargo bench -p bench -- decode`
//! filters by name.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use netchan::proto::{CloseCode, CodecId, Dir, Frame, Hello, PROTOCOL_VERSION};

/// A `DATA` chunk limit as large as netchan's default chunk.
const MAX_DATA: usize = 64 << 10;

fn frames() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "data-32B",
            Frame::Data {
                chan: 7,
                flags: 1,
                payload: Bytes::from(vec![0x5a; 32]),
            },
        ),
        (
            "data-64KiB",
            Frame::Data {
                chan: 7,
                flags: 1,
                payload: Bytes::from(vec![0x5a; MAX_DATA]),
            },
        ),
        (
            "credit",
            Frame::Credit {
                chan: 7,
                grant: 64,
                received: 64,
            },
        ),
        (
            "open",
            Frame::Open {
                chan: 9,
                dir: Dir::OpenerSends,
                capacity: 1024,
                name: "netchan.rpc/bench.Echo".into(),
                type_name: "ToServer<Req, Resp>".into(),
            },
        ),
        (
            "close",
            Frame::Close {
                chan: 9,
                code: CloseCode::Done,
                reason: String::new(),
            },
        ),
        ("ping", Frame::Ping(42)),
    ]
}

fn encoded(f: &Frame) -> BytesMut {
    let mut b = BytesMut::new();
    f.encode(&mut b);
    b
}

fn bench_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for (name, f) in frames() {
        let wire = encoded(&f);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        let mut dst = BytesMut::with_capacity(wire.len() * 2);
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                dst.clear();
                black_box(&f).encode(&mut dst);
                black_box(dst.len())
            })
        });
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter_batched_ref(
                || wire.clone(),
                |src| {
                    let r = Frame::decode(black_box(src), MAX_DATA);
                    assert!(matches!(r, Ok(Some(_))), "a frame decodes");
                    r
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// A burst of small data frames as the writer batches them and the
/// reader parses them: frames per second through encode and decode.
fn bench_burst(c: &mut Criterion) {
    const N: usize = 1024;
    let f = Frame::Data {
        chan: 3,
        flags: 1,
        payload: Bytes::from(vec![1u8; 32]),
    };
    let mut wire = BytesMut::new();
    for _ in 0..N {
        f.encode(&mut wire);
    }
    let mut g = c.benchmark_group("burst");
    g.throughput(Throughput::Elements(N as u64));
    let mut dst = BytesMut::with_capacity(wire.len());
    g.bench_function("encode/1024x-data-32B", |b| {
        b.iter(|| {
            dst.clear();
            for _ in 0..N {
                black_box(&f).encode(&mut dst);
            }
            black_box(dst.len())
        })
    });
    g.bench_function("decode/1024x-data-32B", |b| {
        b.iter_batched_ref(
            || wire.clone(),
            |src| {
                let mut n = 0;
                while let Ok(Some(fr)) = Frame::decode(src, MAX_DATA) {
                    black_box(fr);
                    n += 1;
                }
                assert_eq!(n, N, "every frame decodes");
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_hello(c: &mut Criterion) {
    let hello = Hello {
        version: PROTOCOL_VERSION,
        codec: CodecId::Bincode,
        max_message_len: 16 << 20,
        max_channels: 1024,
        max_handles: 128,
    };
    let mut wire = BytesMut::new();
    hello.encode(&mut wire);
    let mut dst = BytesMut::with_capacity(64);
    c.bench_function("hello/encode", |b| {
        b.iter(|| {
            dst.clear();
            black_box(&hello).encode(&mut dst);
            black_box(dst.len())
        })
    });
    c.bench_function("hello/decode", |b| {
        b.iter_batched_ref(
            || wire.clone(),
            |src| {
                let r = Hello::decode(black_box(src), &hello);
                assert!(matches!(r, Ok(Some(_))), "the hello decodes");
                r
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench_frames, bench_burst, bench_hello);
criterion_main!(benches);
