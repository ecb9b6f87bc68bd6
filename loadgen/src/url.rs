//! `http://host[:port][/path][?query]` URLs: the only kind loadgen speaks (no TLS).

use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// Host as written (IPv6 literals keep their brackets), used for resolution and `Host`.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `host[:port]` exactly as written in the URL: the `Host` header value.
    pub(crate) authority: String,
    /// Path without query, starting with `/`.
    pub(crate) path: String,
    /// Query without the `?`, if any.
    pub(crate) query: Option<String>,
}

impl Url {
    pub(crate) fn parse(text: &str) -> Result<Url, String> {
        let bad = |why: &str| format!("invalid URL `{text}`: {why}");
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(bad("expected http://host[:port][/path]"));
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(bad(
                "https is not supported (loadgen speaks plain HTTP/1.1)",
            ));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("the scheme must be http"));
        }
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(bad("user information is not supported"));
        }
        let (host, port) =
            split_host_port(authority).ok_or_else(|| bad("malformed host or port"))?;
        if host.is_empty() || host.contains(|c: char| c.is_whitespace()) {
            return Err(bad("missing or malformed host"));
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query.to_string())),
            None => (path_and_query, None),
        };
        if path.contains(|c: char| c.is_ascii_whitespace() || c.is_ascii_control()) {
            return Err(bad("the path contains whitespace or control characters"));
        }
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        };
        Ok(Url {
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            path,
            query,
        })
    }

    /// Path and query as they go on the request line.
    pub(crate) fn target(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }

    /// Resolves the host (DNS if needed) to the first address.
    pub(crate) fn socket_addr(&self) -> Result<SocketAddr, String> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        (host, self.port)
            .to_socket_addrs()
            .map_err(|error| format!("cannot resolve `{}`: {error}", self.host))?
            .next()
            .ok_or_else(|| format!("`{}` resolves to no address", self.host))
    }

    /// `http://authority` + `path`, for messages.
    pub(crate) fn display(&self, target: &str) -> String {
        format!("http://{}{target}", self.authority)
    }
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        let (host, after) = authority.split_at(close + 1);
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 80,
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            port.parse().ok().filter(|&p| p != 0)?
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// Joins a base path (an endpoint's path) and a route the way the RivetKit client does: the
/// base loses its trailing `/`, and `//` collapses to `/`.
pub(crate) fn join_path(base: &str, route: &str) -> String {
    let joined = format!(
        "{}/{}",
        base.trim_end_matches('/'),
        route.trim_start_matches('/')
    );
    let mut out = String::with_capacity(joined.len());
    for c in joined.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_urls() {
        let url = Url::parse("http://127.0.0.1:8080/path?x=1#frag").unwrap();
        assert_eq!(
            url,
            Url {
                host: "127.0.0.1".into(),
                port: 8080,
                authority: "127.0.0.1:8080".into(),
                path: "/path".into(),
                query: Some("x=1".into()),
            }
        );
        assert_eq!(url.target(), "/path?x=1");
        let url = Url::parse("HTTP://localhost").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.target().as_str()),
            ("localhost", 80, "/")
        );
        let url = Url::parse("http://[::1]:9000?q").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.target().as_str()),
            ("[::1]", 9000, "/?q")
        );
        assert_eq!(url.socket_addr().unwrap(), "[::1]:9000".parse().unwrap());
    }

    #[test]
    fn rejects_bad_urls() {
        for text in [
            "127.0.0.1:8080",
            "https://example.com/",
            "ftp://x/",
            "http://",
            "http://:80/",
            "http://host:/",
            "http://host:0/",
            "http://host:99999/",
            "http://host:8a/",
            "http://user@host/",
            "http://[::1/",
            "http://host/a b",
        ] {
            assert!(Url::parse(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn joins_base_paths() {
        assert_eq!(join_path("/", "/actors"), "/actors");
        assert_eq!(join_path("", "/actors"), "/actors");
        assert_eq!(
            join_path("/api/rivet/", "/gateway/x"),
            "/api/rivet/gateway/x"
        );
        assert_eq!(join_path("/api//rivet", "gateway"), "/api/rivet/gateway");
    }
}
