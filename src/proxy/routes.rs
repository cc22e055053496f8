//! Routes by path prefix: requests under a prefix go to that route's upstreams instead of the
//! app (or the default upstreams). A game, say, keeps a long-poll resource in another process
//! and sends `/webclientdata` there while everything else reaches Django.

use super::{Proxy, ProxyConfig};

/// One route as configured: a path prefix (no trailing slash) and where it goes.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub prefix: String,
    pub proxy: ProxyConfig,
}

/// The routes of a server, longest prefix first so the most specific one wins.
pub struct Routes(Vec<(String, Proxy)>);

impl Routes {
    pub fn new(configs: &[RouteConfig]) -> Routes {
        let mut routes: Vec<(String, Proxy)> = configs
            .iter()
            .map(|r| (r.prefix.clone(), Proxy::new(r.proxy.clone())))
            .collect();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Routes(routes)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The route whose prefix is `path` itself or a whole-segment start of it: `/ajax` takes
    /// `/ajax` and `/ajax/poll`, never `/ajaxed`.
    pub fn find(&self, path: &str) -> Option<&Proxy> {
        self.0
            .iter()
            .find(|(prefix, _)| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map(|(_, proxy)| proxy)
    }
}

/// A prefix as given, checked and without its trailing slash; `None` if it cannot be a route.
pub fn normalise_prefix(prefix: &str) -> Option<String> {
    let trimmed = prefix.trim_end_matches('/');
    let plain = trimmed.starts_with('/')
        && !trimmed.contains(['?', '#', '%', ' '])
        && !trimmed.contains("//");
    plain.then(|| trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Timing;
    use std::time::Duration;

    fn route(prefix: &str, upstream: &str) -> RouteConfig {
        RouteConfig {
            prefix: prefix.into(),
            proxy: ProxyConfig {
                upstreams: vec![upstream.into()],
                timing: Timing {
                    wait: Duration::ZERO,
                    connect_timeout: Duration::from_secs(1),
                    response_timeout: Duration::from_secs(1),
                    retry_after: 1,
                },
                health: None,
            },
        }
    }

    fn upstream_of<'a>(routes: &'a Routes, path: &str) -> Option<&'a str> {
        routes.find(path).map(|p| p.upstream_addrs()[0].as_str())
    }

    #[test]
    fn whole_segments_match_and_the_longest_prefix_wins() {
        let routes = Routes::new(&[route("/a", "1:1"), route("/a/b", "2:2")]);
        assert_eq!(upstream_of(&routes, "/a"), Some("1:1"));
        assert_eq!(upstream_of(&routes, "/a/x"), Some("1:1"));
        assert_eq!(upstream_of(&routes, "/a/b"), Some("2:2"));
        assert_eq!(upstream_of(&routes, "/a/b/c"), Some("2:2"));
        assert_eq!(upstream_of(&routes, "/ab"), None);
        assert_eq!(upstream_of(&routes, "/"), None);
    }

    #[test]
    fn prefixes_are_plain_paths() {
        assert_eq!(normalise_prefix("/ajax/").as_deref(), Some("/ajax"));
        assert_eq!(normalise_prefix("/").as_deref(), None);
        assert_eq!(normalise_prefix("ajax"), None);
        assert_eq!(normalise_prefix("/a?b"), None);
        assert_eq!(normalise_prefix("/a//b"), None);
    }
}
