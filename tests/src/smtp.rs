//! A real SMTP server inside the test process: plain SMTP (no TLS, no auth) on 127.0.0.1, built on
//! the `mailin` state machine with tokio I/O. It accepts every message and keeps it for the test
//! to read ([`SmtpServer::messages`], [`SmtpServer::wait_for`]). Stopped on drop.
//!
//! Point the server at it with `CUSTODY_SMTP_URL=smtp://127.0.0.1:<port>` ([`SmtpServer::url`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One message as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message as sent after `DATA` (headers and MIME body, dot-unstuffed).
    pub raw: Vec<u8>,
}

impl ReceivedMail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .unwrap_or_else(|| {
                panic!(
                    "an unparseable mail:\n{}",
                    String::from_utf8_lossy(&self.raw)
                )
            })
    }

    /// The single envelope recipient.
    pub fn recipient(&self) -> String {
        assert_eq!(
            self.to.len(),
            1,
            "expected one recipient per mail, got {:?}",
            self.to
        );
        self.to[0].clone()
    }

    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_string()
    }

    /// The `To:` header's address.
    pub fn header_to(&self) -> String {
        let m = self.parsed();
        m.to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or_default()
            .to_string()
    }

    pub fn message_id(&self) -> String {
        self.parsed().message_id().unwrap_or_default().to_string()
    }

    /// The decoded text/plain alternative.
    pub fn text(&self) -> String {
        self.parsed()
            .body_text(0)
            .unwrap_or_else(|| {
                panic!(
                    "mail without a text part:\n{}",
                    String::from_utf8_lossy(&self.raw)
                )
            })
            .into_owned()
    }

    /// The decoded text/html alternative.
    pub fn html(&self) -> String {
        self.parsed()
            .body_html(0)
            .unwrap_or_else(|| {
                panic!(
                    "mail without an HTML part:\n{}",
                    String::from_utf8_lossy(&self.raw)
                )
            })
            .into_owned()
    }

    /// Is the message multipart/alternative (text + HTML)?
    pub fn is_multipart_alternative(&self) -> bool {
        use mail_parser::MimeHeaders;
        let m = self.parsed();
        m.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("alternative"))
        })
    }

    /// The approval link (`…/approve/<token>`) of the text part; also checks that the HTML part
    /// links to the very same URL.
    pub fn approval_link(&self) -> String {
        let text = self.text();
        let link = find_approval_link(&text)
            .unwrap_or_else(|| panic!("no /approve/ link in the mail's text part:\n{text}"));
        let html = self.html();
        let hrefs: Vec<String> = html
            .split("href=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(decode_html_entities)
            .collect();
        assert!(
            hrefs.contains(&link),
            "the HTML part does not link to {link}; its links: {hrefs:?}\n{html}"
        );
        link
    }
}

/// Decodes the character references an HTML attribute value may hold (as template engines
/// escape `&`, `<`, `>`, `"`, `'` and `/`).
pub fn decode_html_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The first `http(s)://…/approve/<token>` URL in `text`.
pub fn find_approval_link(text: &str) -> Option<String> {
    let at = text.find("/approve/")?;
    let start = text[..at].rfind("http")?;
    let end = text[at..]
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | '<' | '>' | '\''))
        .map(|e| at + e)
        .unwrap_or(text.len());
    Some(text[start..end].to_string())
}

#[derive(Default)]
struct Collector {
    messages: Mutex<Vec<ReceivedMail>>,
}

/// One SMTP session's handler: collects the message being received.
struct SessionHandler {
    store: Arc<Collector>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl mailin::Handler for SessionHandler {
    fn data_start(
        &mut self,
        _domain: &str,
        from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> mailin::Response {
        self.from = from.to_string();
        self.to = to.to_vec();
        self.data.clear();
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> mailin::Response {
        let mail = ReceivedMail {
            from: self.from.clone(),
            to: self.to.clone(),
            raw: std::mem::take(&mut self.data),
        };
        self.store.messages.lock().unwrap().push(mail);
        mailin::response::OK
    }
}

/// The running SMTP server.
pub struct SmtpServer {
    pub port: u16,
    store: Arc<Collector>,
    accept: Option<JoinHandle<()>>,
    sessions: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl SmtpServer {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the test SMTP server");
        Self::serve(listener)
    }

    /// Starts on the given port (e.g. one the Custody server was already told about).
    pub async fn start_on(port: u16) -> std::io::Result<SmtpServer> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        Ok(Self::serve(listener))
    }

    fn serve(listener: TcpListener) -> SmtpServer {
        let port = listener.local_addr().unwrap().port();
        let store = Arc::new(Collector::default());
        let sessions: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (store2, sessions2) = (store.clone(), sessions.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let store = store2.clone();
                let task = tokio::spawn(async move {
                    let _ = session(stream, peer.ip(), store).await;
                });
                let mut s = sessions2.lock().unwrap();
                s.retain(|t| !t.is_finished());
                s.push(task);
            }
        });
        SmtpServer {
            port,
            store,
            accept: Some(accept),
            sessions,
        }
    }

    /// `smtp://127.0.0.1:<port>` (plaintext SMTP, as lettre understands it).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, in order of arrival.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.store.messages.lock().unwrap().clone()
    }

    /// The messages received so far for `recipient` (envelope).
    pub fn messages_to(&self, recipient: &str) -> Vec<ReceivedMail> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == recipient))
            .collect()
    }

    /// Waits until at least `n` messages have arrived (polling), then returns all of them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if Instant::now() > deadline {
                let to: Vec<Vec<String>> = got.iter().map(|m| m.to.clone()).collect();
                panic!("the SMTP server received {} message(s) within {timeout:?}, expected {n}; recipients: {to:?}", got.len());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the one message to `recipient` (panics if none arrives, or more than one did).
    pub async fn wait_for_one_to(&self, recipient: &str, timeout: Duration) -> ReceivedMail {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages_to(recipient);
            if got.len() == 1 {
                return got[0].clone();
            }
            assert!(
                got.len() < 2,
                "{} mails to {recipient}, expected one",
                got.len()
            );
            if Instant::now() > deadline {
                let all: Vec<Vec<String>> = self.messages().iter().map(|m| m.to.clone()).collect();
                panic!("no mail to {recipient} within {timeout:?}; received for: {all:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops listening and ends every open session.
    pub fn stop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for t in self.sessions.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn session(stream: TcpStream, peer: IpAddr, store: Arc<Collector>) -> std::io::Result<()> {
    let handler = SessionHandler {
        store,
        from: String::new(),
        to: Vec::new(),
        data: Vec::new(),
    };
    let mut session = mailin::SessionBuilder::new("custody-tests.localhost").build(peer, handler);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(&session.greeting().buffer()?).await?;
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let n = tokio::time::timeout(
            Duration::from_secs(120),
            reader.read_until(b'\n', &mut line),
        )
        .await??;
        if n == 0 {
            return Ok(());
        }
        let response = session.process(&line);
        match response.action {
            mailin::Action::Reply => write.write_all(&response.buffer()?).await?,
            mailin::Action::Close => {
                write.write_all(&response.buffer()?).await?;
                return Ok(());
            }
            mailin::Action::NoReply => {}
            mailin::Action::UpgradeTls => return Ok(()),
        }
    }
}
