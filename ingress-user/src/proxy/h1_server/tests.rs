use super::*;

fn parsed(head: &'static [u8]) -> Parsed {
    parse(&Bytes::from_static(head))
}

#[test]
fn a_plain_get_is_served_here_and_anything_with_a_body_or_an_upgrade_goes_to_hyper() {
    let Parsed::Complete(h, n) = parsed(b"GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\nGET")
    else {
        panic!("a complete GET")
    };
    assert_eq!((n, h.method, h.uri.to_string(), h.close), (61, Method::GET, "/a?b".to_string(), true));
    assert_eq!(h.headers.get(header::HOST).unwrap(), "x");
    for hyper in [
        &b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"HEAD / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
    ] {
        assert!(matches!(parse(&Bytes::from_static(hyper)), Parsed::Hyper), "{:?}", String::from_utf8_lossy(hyper));
    }
    assert!(matches!(parsed(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial));
    assert!(matches!(parsed(b"GET / HTTP/1.1\nHost: x\n\n"), Parsed::Complete(_, 24)));
}

#[test]
fn heads_are_framed_as_hyper_frames_them() {
    let resp = Response::builder().status(200).header("content-length", "5").header("date", "d").body(()).unwrap();
    let (parts, ()) = resp.into_parts();
    let mut out = Vec::new();
    let body = http_body_util::Empty::<Bytes>::new();
    let (f, close) = encode_head(&mut out, &parts, &body, false);
    assert_eq!((f, close), (Framing::Length(5), false));
    assert_eq!(out, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: d\r\n\r\n");
    // no length, unknown size: chunked; the client's close is said
    let resp = Response::builder().status(200).header("date", "d").body(()).unwrap();
    let (parts, ()) = resp.into_parts();
    let body = http_body_util::StreamBody::new(futures::stream::empty::<Result<Frame<Bytes>, BoxError>>());
    out.clear();
    let (f, close) = encode_head(&mut out, &parts, &body, true);
    assert_eq!((f, close), (Framing::Chunked(vec![]), true));
    assert_eq!(out, b"HTTP/1.1 200 OK\r\ndate: d\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    let mut enc = Encoder::new(Framing::Chunked(vec![]));
    let mut o = Output::default();
    assert!(enc.frame(Frame::data(Bytes::from_static(b"hello world 12345")), &mut o));
    assert!(enc.finish(&mut o.out));
    assert_eq!(o.out, b"11\r\nhello world 12345\r\n0\r\n\r\n");
    // more than the declared length: cut, and the connection closes
    let mut enc = Encoder::new(Framing::Length(3));
    let mut o = Output::default();
    assert!(!enc.frame(Frame::data(Bytes::from_static(b"abcdef")), &mut o));
    assert_eq!(o.out, b"abc");
}

#[test]
fn a_pods_fields_are_written_as_it_sent_them() {
    let wire =
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\nETag: \"1\"\r\n\r\n";
    let fields = PodFields::of_answer(wire).expect("nothing to rewrite");
    let mut resp = Response::new(());
    resp.extensions_mut().insert(fields);
    let (parts, ()) = resp.into_parts();
    let (mut out, body) = (Vec::new(), http_body_util::Empty::<Bytes>::new());
    let (f, close) = encode_head(&mut out, &parts, &body, false);
    assert_eq!((f, close), (Framing::Length(5), false));
    let text = String::from_utf8(out).unwrap();
    let (head, date) = text.split_once("date: ").expect("a date added: the pod sent none");
    assert_eq!(head, "HTTP/1.1 200 OK\r\nServer: nginx\r\nETag: \"1\"\r\ncontent-length: 5\r\n");
    assert!(date.ends_with(" GMT\r\n\r\n"), "{date:?}");
    // its Date kept; a 204's length dropped; the client's close said
    let wire = b"HTTP/1.1 204 No Content\r\nDate: d\r\nContent-Length: 0\r\n\r\n";
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.extensions_mut().insert(PodFields::of_answer(wire).unwrap());
    let (parts, ()) = resp.into_parts();
    let mut out = Vec::new();
    let (f, close) = encode_head(&mut out, &parts, &body, true);
    assert_eq!((f, close), (Framing::None, true));
    assert_eq!(out, b"HTTP/1.1 204 No Content\r\nDate: d\r\nconnection: close\r\n\r\n");
}
