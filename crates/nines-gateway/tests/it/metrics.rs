//! Metrics by route: requests, responses by status class and latency per
//! route (its name, or its match as configured, or `(default)` for the
//! listener's cluster), parsed with a real OpenMetrics parser, and kept
//! across a reload that reorders and adds routes.

use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};

use crate::common::*;

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

fn config(backends: &str, dead: &str, extra_route: bool) -> String {
    let extra = if extra_route {
        "[[listener.route]]\nname = \"static\"\npath_prefix = \"/static\"\ncluster = \"web\"\n"
    } else {
        ""
    };
    format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
cluster = "web"

{extra}
[[listener.route]]
path = "/down"
cluster = "dead"

[[listener.route]]
name = "api"
path_prefix = "/api"
cluster = "web"

[[cluster]]
name = "web"
backends = {backends}

[[cluster]]
name = "dead"
backends = [{{ addr = "{dead}" }}]
"#
    )
}

fn parse(text: &str) -> Exposition {
    openmetrics_parser::openmetrics::parse_openmetrics(text)
        .unwrap_or_else(|e| panic!("not valid OpenMetrics: {e:?}\n{text}"))
}

/// The value of the series of `family` with exactly these labels: the number
/// of a counter, the observation count of a histogram.
fn value(expo: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let fam = expo.families.get(family)?;
    fam.iter_samples().find_map(|s| {
        let set = s.get_labelset().ok()?;
        let exact = labels
            .iter()
            .all(|(k, v)| set.get_label_value(k) == Some(*v))
            && set.iter().count() == labels.len();
        if !exact {
            return None;
        }
        match &s.value {
            OpenMetricsValue::Counter(c) => Some(c.value.as_f64()),
            OpenMetricsValue::Histogram(h) => h.count.map(|c| c as f64),
            OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => Some(n.as_f64()),
            _ => None,
        }
    })
}

fn must(expo: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    value(expo, family, labels).unwrap_or_else(|| panic!("no series {family} {labels:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_responses_and_latency_are_counted_by_route_across_reloads() -> anyhow::Result<()>
{
    let a = BackendProcess::spawn("a")?;
    // A port nobody listens on: every attempt on the "dead" cluster fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let backends = backend_list(&[&a]);
    let gateway = start_gateway(&config(&backends, &dead.to_string(), false)).await?;
    let web = gateway.listener_addr("web").await.expect("web");
    let client = client();
    for _ in 0..3 {
        assert_eq!(
            get(&client, &format!("http://{web}/api/items")).await?.0,
            200
        );
    }
    for _ in 0..2 {
        let status = get(&client, &format!("http://{web}/down")).await?.0;
        assert!((500..600).contains(&status), "{status}");
    }
    assert_eq!(get(&client, &format!("http://{web}/other")).await?.0, 200);

    let expo = parse(&gateway.metrics().render());
    for (family, kind) in [
        ("nines_gateway_route_requests", OpenMetricsType::Counter),
        ("nines_gateway_route_responses", OpenMetricsType::Counter),
        (
            "nines_gateway_route_request_duration_seconds",
            OpenMetricsType::Histogram,
        ),
    ] {
        let fam = expo
            .families
            .get(family)
            .unwrap_or_else(|| panic!("family {family} missing"));
        assert_eq!(fam.family_type, kind, "type of {family}");
    }
    let api = [("listener", "web"), ("route", "api")];
    let down = [("listener", "web"), ("route", "path=/down")];
    let default = [("listener", "web"), ("route", "(default)")];
    assert_eq!(must(&expo, "nines_gateway_route_requests", &api), 3.0);
    assert_eq!(must(&expo, "nines_gateway_route_requests", &down), 2.0);
    assert_eq!(must(&expo, "nines_gateway_route_requests", &default), 1.0);
    let class = |labels: &[(&'static str, &'static str)], class: &'static str| {
        let mut labels = labels.to_vec();
        labels.push(("class", class));
        labels
    };
    let responses = "nines_gateway_route_responses";
    assert_eq!(must(&expo, responses, &class(&api, "2xx")), 3.0);
    assert_eq!(must(&expo, responses, &class(&api, "5xx")), 0.0);
    assert_eq!(must(&expo, responses, &class(&down, "5xx")), 2.0);
    assert_eq!(must(&expo, responses, &class(&down, "2xx")), 0.0);
    assert_eq!(must(&expo, responses, &class(&default, "2xx")), 1.0);
    let latency = "nines_gateway_route_request_duration_seconds";
    assert_eq!(must(&expo, latency, &api), 3.0);
    assert_eq!(must(&expo, latency, &down), 2.0);
    // The listener's own counters still see every request.
    assert_eq!(
        must(&expo, "nines_gateway_requests", &[("listener", "web")]),
        6.0
    );

    // A reload that adds a route before the others keeps each route's
    // counters by its label; the new route starts at zero.
    gateway
        .apply(nines_gateway::Config::parse(
            std::path::Path::new("test.toml"),
            &config(&backends, &dead.to_string(), true),
        )?)
        .await?;
    assert_eq!(
        get(&client, &format!("http://{web}/api/more")).await?.0,
        200
    );
    assert_eq!(
        get(&client, &format!("http://{web}/static/a.css")).await?.0,
        200
    );
    let expo = parse(&gateway.metrics().render());
    assert_eq!(must(&expo, "nines_gateway_route_requests", &api), 4.0);
    assert_eq!(must(&expo, responses, &class(&api, "2xx")), 4.0);
    let static_route = [("listener", "web"), ("route", "static")];
    assert_eq!(
        must(&expo, "nines_gateway_route_requests", &static_route),
        1.0
    );
    assert_eq!(must(&expo, latency, &static_route), 1.0);
    assert_eq!(must(&expo, "nines_gateway_route_requests", &down), 2.0);
    gateway.shutdown().await;
    Ok(())
}
