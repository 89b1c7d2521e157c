//! The heads the delayed-binding tests feed the head scanner: a hand-written corpus of
//! the nasty cases (`corpus`) and a seeded generator of random ones (`random_head`).
//! Shared by the differential test against the agent's router (`bind/differential.rs`)
//! and the packet tier, which runs the same heads through the BPF program
//! (`tests/tests/packet_bind_scan.rs`).

use ingress_common::head::SCAN_MAX;

/// The nasty cases, written out: each at every cut, on every listener.
pub fn corpus(host: &str) -> Vec<Vec<u8>> {
    let up = host.to_ascii_uppercase();
    let mut c: Vec<String> = vec![
        format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /x?y=1 HTTP/1.1\r\nhost:{host}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {up}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}.\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}..\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: \t {host} \t\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}:9080\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}:\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}:0\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}:65535\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}:65536\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}:8:8\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}:80x\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: u@{host}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nhost: other.test\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: other.test\r\nHOST: {host}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nX-Host: other.test\r\nHost: {host}\r\nHosts: x\r\nHos: y\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\n other.test\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost:\r\n {host}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nX: y\r\n\tHost: {host}\r\n\r\n"),
        format!("GET / HTTP/1.1\nHost: {host}\n\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\n\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\rX: y\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nX: a\rb\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\0\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nX: \0\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nX: \x7f\x01\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost : {host}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\n Host: {host}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\n: x\r\nHost: {host}\r\n\r\n"),
        format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET http://other.test/ HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET http://{host}/ HTTP/1.1\r\nHost: other.test\r\n\r\n"),
        format!("GET {host}:80 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("OPTIONS * HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET * HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n"),
        format!("GET / HTTP/1.0\r\n\r\n"),
        format!("GET / HTTP/2.0\r\nHost: {host}\r\n\r\n"),
        format!("GET / http/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET  / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET / HTTP/1.1 \r\nHost: {host}\r\n\r\n"),
        format!("get / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /a/../b HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET //b HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /%2e%2e/b HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /a%zz HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /a\\b HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /a#b HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /a?b=%zz&c=/d?e HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: [::1]:9080\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: [{host}]\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: 10.42.0.10:8080\r\n\r\n"),
        format!("GET / HTTP/1.1\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: \r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello"),
        format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
        format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5, 5\r\n\r\nhello"),
        format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: -1\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        ),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nExpect: 100-continue\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\nGET / HTTP/1.1\r\nHost: other.test\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nX: {}\r\n\r\n", "v".repeat(2000)),
        format!("GET /{} HTTP/1.1\r\nHost: {host}\r\n\r\n", "p".repeat(SCAN_MAX)),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\n{}\r\n", "X: y\r\n".repeat(120)),
    ];
    c.push(format!("GET / HTTP/1.1\r\nHost: {host}\r\nX: caf\u{e9}\r\n\r\n"));
    let mut out: Vec<Vec<u8>> = c.into_iter().map(String::into_bytes).collect();
    out.push([b"GET / HTTP/1.1\r\nHost: ".as_slice(), host.as_bytes(), b"\xff\r\n\r\n"].concat());
    out.push([b"GET / HTTP/1.1\r\nX: \x80\x81\r\nHost: ".as_slice(), host.as_bytes(), b"\r\n\r\n"].concat());
    out
}

/// SplitMix64: a seeded generator, so a failure is reproduced by its seed.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
}

/// Case changes at random.
fn recase(r: &mut Rng, s: &str) -> String {
    s.chars()
        .map(|c| {
            if r.chance(30) {
                if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }
            } else {
                c
            }
        })
        .collect()
}

/// One random head built from the parts the router and the scanner care about.
pub fn random_head(r: &mut Rng, hosts: &[String]) -> Vec<u8> {
    // a clean head (only the Host value and ordinary fields vary) two times in five
    let clean = r.chance(40);
    let host = if r.chance(90) { hosts[r.below(hosts.len())].clone() } else { "nowhere.test".to_string() };
    let method = if clean {
        r.pick(&["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH"])
    } else {
        r.pick(&[
            "GET",
            "GET",
            "POST",
            "HEAD",
            "PUT",
            "DELETE",
            "OPTIONS",
            "PATCH",
            "CONNECT",
            "PRI",
            "get",
            "TRACE",
            "",
            "ABCDEFGHIJKLMNOPQ",
        ])
    };
    let other = hosts[r.below(hosts.len())].clone();
    let target = match if clean { 15 } else { r.below(16) } {
        0 => "*".to_string(),
        1 => format!("http://{other}/x"),
        2 => format!("{other}:80"),
        3 => "//x".into(),
        4 => "/a/../b".into(),
        5 => "/%61pi".into(),
        6 => "/a\\b".into(),
        7 => "/x#f".into(),
        8 => "/api/v1/x?y=1&z=%41".into(),
        9 => "/.".into(),
        10 => "/a/./b/".into(),
        _ => r.pick(&["/", "/api", "/greeter-service/greeter/greet", "/x/y/", "/~u/a.b"]).to_string(),
    };
    let version = if clean || r.chance(90) {
        "HTTP/1.1"
    } else {
        r.pick(&["HTTP/1.0", "HTTP/2.0", "http/1.1", "HTTP/1.1 ", "HTTP/1.12"])
    };
    let eol = |r: &mut Rng| if clean || r.chance(97) { "\r\n" } else { r.pick(&["\n", "\r", "\r\r\n"]) };
    let mut h = format!("{method} {target} {version}{}", eol(r));
    let host_value = |r: &mut Rng| {
        let mut v = if r.chance(50) { recase(r, &host) } else { host.clone() };
        if r.chance(10) {
            v.push('.');
        }
        if r.chance(30) {
            v += r.pick(&[":9080", ":8080", ":", ":0", ":65535", ":65536", ":8:8", ":x", ":00080"]);
        }
        match r.below(30) {
            0 => v = format!("[::1]{}", if r.chance(50) { ":80" } else { "" }),
            1 => v = format!("u@{v}"),
            2 => v = String::new(),
            3 => v = format!("{v} x"),
            4 => v = "10.42.0.10".into(),
            _ => {}
        }
        let ws = |r: &mut Rng| r.pick(&["", "", "", " ", "\t", "  "]).to_string();
        format!("{}{v}{}", ws(r), ws(r))
    };
    let hosts_n = match if clean { 2 } else { r.below(20) } {
        0 => 0,
        1 => 2,
        _ => 1,
    };
    let mut fields: Vec<String> = vec![];
    for _ in 0..hosts_n {
        let name = if clean || r.chance(85) {
            recase(r, "host")
        } else {
            r.pick(&["Host ", "Hos", "Hosts", " Host", "X-Host"]).to_string()
        };
        fields.push(format!("{name}:{}", host_value(r)));
    }
    for _ in 0..r.below(5) {
        let f = match if clean { *r.pick(&[&3, &4, &5, &6, &12, &13]) } else { r.below(16) } {
            0 => "Transfer-Encoding: chunked".to_string(),
            1 => r
                .pick(&[
                    "Transfer-Encoding: gzip, chunked",
                    "transfer-encoding: gzip",
                    "Transfer-Encoding: chunked, chunked",
                ])
                .to_string(),
            2 => format!("Content-Length: {}", r.pick(&["0", "5", "5, 5", "-1", "abc", "", "99999999999999999999"])),
            3 => "Content-Length: 5".into(),
            4 => r
                .pick(&["Upgrade: websocket", "Upgrade: h2c", "Upgrade: WebSocket, H2C", "HTTP2-Settings: AAA"])
                .to_string(),
            5 => r.pick(&["Connection: close", "Connection: Upgrade", "Connection: keep-alive"]).to_string(),
            6 => "Expect: 100-continue".into(),
            7 => format!("X-Long: {}", "v".repeat(r.below(1600))),
            8 => " folded".into(),
            9 => "X: a\0b".into(),
            10 => "X: a\x01b".into(),
            11 => "X: caf\u{e9}".into(),
            _ => format!("{}: {}", r.pick(&["Accept", "User-Agent", "X-Forwarded-For", "Cookie", "X_Y"]), "v1"),
        };
        fields.insert(r.below(fields.len() + 1), f);
    }
    for f in fields {
        h += &f;
        h += eol(r);
    }
    h += eol(r);
    if r.chance(20) {
        h += r.pick(&["hello", "GET / HTTP/1.1\r\nHost: other.test\r\n\r\n", "0\r\n\r\n"]);
    }
    let mut bytes = h.into_bytes();
    // byte-level mutations
    for _ in 0..(if !clean && r.chance(25) { 1 + r.below(3) } else { 0 }) {
        if bytes.is_empty() {
            break;
        }
        let at = r.below(bytes.len());
        match r.below(4) {
            0 => bytes[at] = r.next_u64() as u8,
            1 => bytes.insert(at, *r.pick(&[&b'\0', &b'\r', &b'\n', &b' ', &b'\t', &b':', &0x80u8, &b'.'])),
            2 => {
                bytes.remove(at);
            }
            _ => bytes[at] = bytes[at].to_ascii_uppercase(),
        }
    }
    bytes
}
