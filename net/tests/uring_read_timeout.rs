//! Read timeouts of the io_uring driver's streams, over real loopback sockets: a read that waits
//! too long fails with `TimedOut` (within one sweep tick), data beats the deadline, and a read
//! dropped while it waited leaves nothing behind that could fail a later read early.

use std::io::Write;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement, spawn_local};
use pinion_net::uring::{Driver, READ_TIMEOUT_TICK};

fn with_driver<F, Fut>(body: F)
where
    F: FnOnce(Driver, std::net::SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    std::thread::spawn(move || {
        LocalExecutorBuilder::new(Placement::Unbound)
            .make()
            .expect("glommio executor")
            .run(async move {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let driver = Driver::new(listener).expect("io_uring driver");
                let runner = driver.clone();
                spawn_local(async move { runner.run().await.expect("driver") }).detach();
                body(driver, addr).await;
            });
    })
    .join()
    .unwrap();
}

const TIMEOUT: Duration = Duration::from_millis(150);

#[test]
fn a_waiting_read_times_out_and_data_beats_the_deadline() {
    with_driver(|driver, addr| async move {
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let mut stream = driver.accept().await.unwrap();
        stream.set_read_timeout(Some(TIMEOUT));
        let mut buf = [0u8; 16];

        // Nothing arrives: TimedOut, not before the timeout, and within one tick after it
        // (plus slack for a loaded machine).
        let started = Instant::now();
        let error = stream.read(&mut buf).await.unwrap_err();
        let waited = started.elapsed();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(waited >= TIMEOUT, "{waited:?}");
        assert!(
            waited < TIMEOUT + READ_TIMEOUT_TICK + Duration::from_secs(1),
            "{waited:?}"
        );

        // The stream still reads: bytes sent before the deadline are returned.
        let sender = std::thread::spawn({
            let mut client = client.try_clone().unwrap();
            move || {
                std::thread::sleep(TIMEOUT / 3);
                client.write_all(b"hello").unwrap();
            }
        });
        assert_eq!(stream.read(&mut buf).await.unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        sender.join().unwrap();

        // Each read gets the whole timeout: many reads that each wait less than it, back to
        // back for several timeouts' worth, never time out.
        let started = Instant::now();
        let sender = std::thread::spawn({
            let mut client = client.try_clone().unwrap();
            move || {
                for _ in 0..12 {
                    std::thread::sleep(TIMEOUT / 3);
                    client.write_all(b"x").unwrap();
                }
            }
        });
        let mut got = 0;
        while got < 12 {
            got += stream.read(&mut buf).await.unwrap();
        }
        sender.join().unwrap();
        assert!(started.elapsed() > TIMEOUT * 2);

        // Without a timeout a read waits as long as it takes.
        stream.set_read_timeout(None);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(TIMEOUT * 2);
            client.write_all(b"late").unwrap();
            client
        });
        assert_eq!(stream.read(&mut buf).await.unwrap(), 4);
        drop(sender.join().unwrap());
    });
}

#[test]
fn a_read_dropped_while_waiting_does_not_fail_the_next_one() {
    with_driver(|driver, addr| async move {
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let mut stream = driver.accept().await.unwrap();
        stream.set_read_timeout(Some(TIMEOUT));
        let mut buf = [0u8; 16];

        // A read given up after a moment (as a select with something else would).
        let gave_up =
            futures_lite::future::or(async { Some(stream.read(&mut buf).await) }, async {
                glommio::timer::sleep(TIMEOUT / 10).await;
                None
            })
            .await;
        assert!(gave_up.is_none());
        // Its deadline passes while nobody reads.
        glommio::timer::sleep(TIMEOUT + READ_TIMEOUT_TICK * 2).await;

        // The next read starts its own timeout: data after half of it is read, not an error.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(TIMEOUT / 2);
            client.write_all(b"still here").unwrap();
            client
        });
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"still here");
        drop(sender.join().unwrap());
    });
}
