//! DNS discovery (hickory-server over UDP and TCP). Answers from the local
//! catalog, never from the store:
//!
//! - `NAME.service.nines.` A/AAAA: the healthy instances' addresses; SRV: one
//!   record per healthy instance with its port and weight, the target
//!   `HEX.addr.nines.` (the address in hex) with its A/AAAA in the additional
//!   section;
//! - `TAG.NAME.service.nines.`: the same, for instances carrying TAG;
//!   RFC 2782 names `_NAME._tcp.service.nines.` and `_NAME._TAG.service.nines.`
//!   work too;
//! - `HEX.addr.nines.` A/AAAA: the address it spells;
//! - an unknown service: NXDOMAIN; a known one asked for another type:
//!   NOERROR with no answer; both carry the zone's SOA for negative caching;
//! - names outside `nines.`: REFUSED; not a query: NOTIMP; not exactly one
//!   question or not class IN: FORMERR.
//!
//! UDP answers fit the client's EDNS size (512 bytes without EDNS): records
//! that do not fit are left out and the TC bit is set, so the client asks
//! again over TCP. Garbage that does not parse is answered FORMERR (or
//! dropped when not even the header parses) by the server loop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::xfer::Protocol;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::limits::{DNS_RECORDS_MAX, DNS_UDP_BYTES_DEFAULT};
use crate::RegistryError;

/// How long a TCP DNS connection may stay idle.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// The DNS front of the registry.
#[derive(Clone)]
pub struct DnsHandler {
    catalog: watch::Receiver<Arc<Catalog>>,
    ttl_secs: u32,
}

/// What a query gets.
#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    /// Response code.
    pub code: ResponseCode,
    /// Answer records.
    pub answers: Vec<Record>,
    /// Authority records (the SOA on negative answers).
    pub authority: Vec<Record>,
    /// Additional records (addresses of SRV targets).
    pub additionals: Vec<Record>,
    /// Whether records were left out to fit (TC bit).
    pub truncated: bool,
}

impl Answer {
    fn code(code: ResponseCode) -> Answer {
        Answer {
            code,
            ..Answer::default()
        }
    }
}

fn zone() -> Name {
    Name::from_ascii("nines.").expect("literal name")
}

/// The target name of an address in SRV answers.
pub fn addr_name(ip: IpAddr) -> Name {
    let hex: String = match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
        IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
    };
    Name::from_ascii(format!("{hex}.addr.nines.")).expect("hex label")
}

fn parse_addr_label(label: &str) -> Option<IpAddr> {
    let bytes: Option<Vec<u8>> = (0..label.len())
        .step_by(2)
        .map(|i| {
            label
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    match bytes?.as_slice() {
        b if b.len() == 4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        b if b.len() == 16 => {
            let octets: [u8; 16] = b.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

fn address_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A::from(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA::from(v6)),
    };
    Record::from_rdata(name.clone(), ttl, rdata)
}

impl DnsHandler {
    /// A handler answering from `catalog` with records of `ttl_secs`.
    pub fn new(catalog: watch::Receiver<Arc<Catalog>>, ttl_secs: u32) -> DnsHandler {
        DnsHandler { catalog, ttl_secs }
    }

    fn soa(&self, serial: i64) -> Record {
        let soa = SOA::new(
            Name::from_ascii("ns.nines.").expect("literal name"),
            Name::from_ascii("hostmaster.nines.").expect("literal name"),
            (serial & 0xffff_ffff) as u32,
            3600,
            600,
            86_400,
            self.ttl_secs,
        );
        Record::from_rdata(zone(), self.ttl_secs, RData::SOA(soa))
    }

    /// Answers one question (no size limit applied).
    pub fn answer(&self, name: &Name, record_type: RecordType) -> Answer {
        let catalog = self.catalog.borrow().clone();
        let name = name.to_lowercase();
        if !zone().zone_of(&name) {
            return Answer::code(ResponseCode::Refused);
        }
        let labels: Vec<String> = name
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let negative = |code| Answer {
            code,
            authority: vec![self.soa(catalog.revision)],
            ..Answer::default()
        };
        let n = labels.len();
        // labels end with "nines"; look at what precedes it.
        if n == 1 {
            return match record_type {
                RecordType::SOA => Answer {
                    answers: vec![self.soa(catalog.revision)],
                    ..Answer::default()
                },
                _ => negative(ResponseCode::NoError),
            };
        }
        if n == 3 && labels[1] == "addr" {
            return match parse_addr_label(&labels[0]) {
                Some(ip)
                    if matches!(
                        (ip, record_type),
                        (IpAddr::V4(_), RecordType::A) | (IpAddr::V6(_), RecordType::AAAA)
                    ) =>
                {
                    Answer {
                        answers: vec![address_record(&name, self.ttl_secs, ip)],
                        ..Answer::default()
                    }
                }
                Some(_) => negative(ResponseCode::NoError),
                None => negative(ResponseCode::NXDomain),
            };
        }
        if !(3..=4).contains(&n) || labels[n - 2] != "service" {
            return negative(ResponseCode::NXDomain);
        }
        // RFC 2782 names, `_NAME._tcp.service.nines.` (any tag: `_NAME._TAG`),
        // ask for the same records as `NAME.service.nines.`.
        let (service_name, tag) =
            match (n, labels[0].strip_prefix('_'), labels[1].strip_prefix('_')) {
                (4, Some(name), Some("tcp" | "udp")) => (name, None),
                (4, Some(name), Some(tag)) => (name, Some(tag)),
                (4, _, _) => (labels[1].as_str(), Some(labels[0].as_str())),
                _ => (labels[0].as_str(), None),
            };
        let Some(service) = catalog
            .service(service_name)
            .filter(|s| s.registered().next().is_some())
        else {
            return negative(ResponseCode::NXDomain);
        };
        let mut answer = self.records(&name, service, tag, record_type);
        if answer.answers.is_empty() {
            answer.authority.push(self.soa(catalog.revision));
        }
        answer
    }
}

impl DnsHandler {
    /// The records of `service`'s healthy instances (carrying `tag`) for
    /// `record_type`; SRV answers carry their targets' addresses as
    /// additional records.
    fn records(
        &self,
        name: &Name,
        service: &crate::catalog::ServiceEntry,
        tag: Option<&str>,
        record_type: RecordType,
    ) -> Answer {
        let healthy = service.healthy(tag).take(DNS_RECORDS_MAX);
        let mut answer = Answer::default();
        match record_type {
            RecordType::A | RecordType::AAAA => {
                let want_v4 = record_type == RecordType::A;
                answer.answers = healthy
                    .filter(|i| i.address.is_ipv4() == want_v4)
                    .map(|i| address_record(name, self.ttl_secs, i.address))
                    .collect();
            }
            RecordType::SRV => {
                for instance in healthy {
                    let target = addr_name(instance.address);
                    let weight = instance.weight.min(u32::from(u16::MAX)) as u16;
                    let srv = SRV::new(1, weight, instance.port, target.clone());
                    answer.answers.push(Record::from_rdata(
                        name.clone(),
                        self.ttl_secs,
                        RData::SRV(srv),
                    ));
                    answer.additionals.push(address_record(
                        &target,
                        self.ttl_secs,
                        instance.address,
                    ));
                }
            }
            _ => {}
        }
        answer
    }
}

/// Leaves out records until the message fits `budget` bytes, setting TC when
/// an answer record had to go (the additional records go first, silently).
fn fit(header: &Header, query: &hickory_proto::op::Query, answer: &mut Answer, budget: usize) {
    let size = |a: &Answer| {
        let mut m = Message::new();
        m.set_header(*header);
        m.add_query(query.clone());
        m.add_answers(a.answers.iter().cloned());
        m.add_name_servers(a.authority.iter().cloned());
        m.add_additionals(a.additionals.iter().cloned());
        // OPT record room when EDNS is used.
        m.to_vec().map_or(usize::MAX, |v| v.len() + 11)
    };
    if size(answer) <= budget {
        return;
    }
    // Additional records are optional: drop them all at once (one more
    // encoding instead of one per record) before cutting answers.
    answer.additionals.clear();
    while size(answer) > budget && !answer.answers.is_empty() {
        answer.answers.pop();
        answer.truncated = true;
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        header.set_recursion_available(false);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        let request_edns = request.edns().cloned();
        if let Some(edns) = &request_edns {
            let mut reply = Edns::new();
            reply.set_max_payload(edns.max_payload().max(DNS_UDP_BYTES_DEFAULT));
            reply.set_version(0);
            builder.edns(reply);
        }
        let mut answer = if request.message_type() != MessageType::Query {
            Answer::code(ResponseCode::FormErr)
        } else if request.op_code() != OpCode::Query {
            Answer::code(ResponseCode::NotImp)
        } else {
            match request.request_info() {
                Err(_) => Answer::code(ResponseCode::FormErr),
                Ok(info) if info.query.query_class() != DNSClass::IN => {
                    Answer::code(ResponseCode::Refused)
                }
                Ok(info) => {
                    let name: Name = info.query.name().into();
                    self.answer(&name, info.query.query_type())
                }
            }
        };
        if request.protocol() == Protocol::Udp {
            let budget = request_edns.as_ref().map_or(DNS_UDP_BYTES_DEFAULT, |e| {
                e.max_payload().max(DNS_UDP_BYTES_DEFAULT)
            });
            if let Ok(info) = request.request_info() {
                let query = info.query.original().clone();
                fit(&header, &query, &mut answer, usize::from(budget));
            }
        }
        header.set_response_code(answer.code);
        header.set_truncated(answer.truncated);
        let response = builder.build(
            header,
            answer.answers.iter(),
            answer.authority.iter(),
            std::iter::empty(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "cannot send a DNS answer");
                let mut failed = Header::new();
                failed.set_response_code(ResponseCode::ServFail);
                failed.into()
            }
        }
    }
}

/// A running DNS server; stops when dropped.
pub struct DnsServer {
    /// The address it serves on (UDP and TCP).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds UDP and TCP on `addr` (port 0: a free port, the same for both) and
/// serves `handler` until the returned server is dropped.
pub async fn serve(addr: SocketAddr, handler: DnsHandler) -> Result<DnsServer, RegistryError> {
    let listen_error = |source| RegistryError::Listen {
        what: "dns",
        addr,
        source,
    };
    let mut attempts = 0;
    let (udp, tcp) = loop {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(listen_error)?;
        let bound = udp.local_addr().map_err(listen_error)?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => break (udp, tcp),
            // With port 0 the UDP port may be taken for TCP: try another.
            Err(_) if addr.port() == 0 && attempts < 10 => attempts += 1,
            Err(source) => return Err(listen_error(source)),
        }
    };
    let bound = udp.local_addr().map_err(listen_error)?;
    let mut server = ServerFuture::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE);
    let task = tokio::spawn(async move {
        if let Err(error) = server.block_until_done().await {
            tracing::warn!(%error, "dns server stopped");
        }
    });
    Ok(DnsServer { addr: bound, task })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{health_key, instance_key, Check, HealthRecord, Instance, Status};

    fn catalog() -> watch::Receiver<Arc<Catalog>> {
        let mut c = Catalog::new(1);
        let instances = [
            ("a", "127.0.0.1", 8001, "blue", Status::Passing),
            ("b", "::1", 8002, "green", Status::Passing),
            ("c", "127.0.0.3", 8003, "blue", Status::Critical),
        ];
        for (id, address, port, tag, status) in instances {
            let instance = Instance {
                service: "web".into(),
                id: id.into(),
                address: address.parse().unwrap(),
                port,
                weight: 7,
                tags: vec![tag.into()],
                meta: BTreeMap::new(),
                check: Check::Tcp {
                    addr: "127.0.0.1:1".parse().unwrap(),
                    probe: crate::model::Probe {
                        interval_ms: 1000,
                        timeout_ms: 500,
                        rise: 1,
                        fall: 1,
                    },
                },
                deregister_after_ms: None,
                lease: 0,
            };
            let health = HealthRecord {
                status,
                output: String::new(),
                since_ms: 0,
                checker: "n1".into(),
            };
            c.apply_put(
                instance_key("web", id).as_bytes(),
                &serde_json::to_vec(&instance).unwrap(),
                2,
            );
            c.apply_put(
                health_key("web", id).as_bytes(),
                &serde_json::to_vec(&health).unwrap(),
                3,
            );
        }
        c.loaded = true;
        watch::channel(Arc::new(c)).1
    }

    fn ask(name: &str, record_type: RecordType) -> Answer {
        DnsHandler::new(catalog(), 5).answer(&Name::from_ascii(name).unwrap(), record_type)
    }

    #[test]
    fn healthy_instances_answer_a_aaaa_and_srv() {
        let a = ask("web.service.nines.", RecordType::A);
        assert_eq!(a.code, ResponseCode::NoError);
        assert_eq!(a.answers.len(), 1, "only the passing IPv4 instance");
        let aaaa = ask("WEB.Service.Nines.", RecordType::AAAA);
        assert_eq!(aaaa.answers.len(), 1);
        let srv = ask("web.service.nines.", RecordType::SRV);
        assert_eq!(srv.answers.len(), 2);
        assert_eq!(srv.additionals.len(), 2);
        let RData::SRV(first) = srv.answers[0].data() else {
            panic!("not SRV: {:?}", srv.answers[0]);
        };
        assert_eq!((first.port(), first.weight()), (8001, 7));
        assert_eq!(first.target(), &addr_name("127.0.0.1".parse().unwrap()));
        let target = ask(&first.target().to_string(), RecordType::A);
        assert_eq!(target.answers.len(), 1);
    }

    #[test]
    fn tags_unknown_names_and_foreign_zones() {
        assert_eq!(
            ask("blue.web.service.nines.", RecordType::SRV)
                .answers
                .len(),
            1
        );
        assert_eq!(
            ask("red.web.service.nines.", RecordType::SRV).answers.len(),
            0
        );
        let rfc2782 = ask("_web._tcp.service.nines.", RecordType::SRV);
        assert_eq!(rfc2782.answers.len(), 2);
        let rfc2782_tag = ask("_web._blue.service.nines.", RecordType::SRV);
        assert_eq!(rfc2782_tag.answers.len(), 1);
        let unknown = ask("nope.service.nines.", RecordType::A);
        assert_eq!(unknown.code, ResponseCode::NXDomain);
        assert_eq!(unknown.authority.len(), 1, "SOA for negative caching");
        let other_type = ask("web.service.nines.", RecordType::MX);
        assert_eq!(
            (other_type.code, other_type.answers.len()),
            (ResponseCode::NoError, 0)
        );
        assert_eq!(
            ask("example.com.", RecordType::A).code,
            ResponseCode::Refused
        );
        assert_eq!(
            ask("zz.addr.nines.", RecordType::A).code,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask("a.b.c.web.service.nines.", RecordType::A).code,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn addr_labels_round_trip() {
        for ip in ["10.1.2.3", "::1", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            let name = addr_name(ip);
            let label = String::from_utf8_lossy(name.iter().next().unwrap()).into_owned();
            assert_eq!(parse_addr_label(&label), Some(ip));
        }
        assert_eq!(parse_addr_label("abc"), None);
    }

    #[test]
    fn oversized_answers_are_cut_with_tc() {
        let query = hickory_proto::op::Query::query(
            Name::from_ascii("web.service.nines.").unwrap(),
            RecordType::SRV,
        );
        let mut answer = ask("web.service.nines.", RecordType::SRV);
        let header = Header::new();
        fit(&header, &query, &mut answer, 512);
        assert!(!answer.truncated);
        assert_eq!(answer.answers.len(), 2);
        fit(&header, &query, &mut answer, 100);
        assert!(answer.truncated);
        assert!(answer.additionals.is_empty());
        assert!(answer.answers.len() < 2);
    }
}
