//! `dial ADDR [SEND_BYTES]`: connects to ADDR (TCP), prints `peer=<getpeername>` and
//! `local=<getsockname>`, sends SEND_BYTES bytes of the test pattern (seed 7), shuts
//! down its sending side and prints `got=<bytes read> fnv=<FNV-1a of them>` once the
//! peer closes. Used by the netns tier from inside a test cgroup (a process of its
//! own, so that only it is under the cgroup connect hooks). Bounded: 10 s timeouts.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use ingress_tests::pattern::{Fnv, bytes};

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().expect("usage: dial ADDR [SEND_BYTES]").parse().expect("ADDR");
    let send: usize = args.next().map(|s| s.parse().expect("SEND_BYTES")).unwrap_or(0);
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => {
            println!("error={e}");
            std::process::exit(2);
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    println!("peer={}", s.peer_addr().expect("getpeername"));
    println!("local={}", s.local_addr().expect("getsockname"));
    if send > 0 {
        s.write_all(&bytes(7, send)).expect("send");
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        println!("error={e}");
        std::process::exit(3);
    }
    println!("got={} fnv={:016x}", got.len(), Fnv::of(&got));
}
