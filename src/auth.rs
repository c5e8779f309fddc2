//! Who may call, and which businesses each caller may touch.
//!
//! Callers present a bearer token. Punctual never holds a token in clear: the
//! operator configures the SHA-256 digest of each token with the business
//! ids it is bound to (or `*` for every business), and a presented token is
//! hashed and looked up by digest. A digest reveals nothing usable, so a
//! hash-map lookup needs no constant-time comparison.
//!
//! This module owns the token table, the [`Caller`] a request runs as, and
//! the rule that decides when the server may run without tokens. It knows
//! neither tonic nor HTTP: the gRPC layer reads the `authorization` header,
//! asks [`Authenticator::authenticate`] for a [`Caller`], and checks each
//! request's business against it.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::domain::ExternalId;

/// The SHA-256 digest of a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of a token as presented by a caller.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Reads the 64 hexadecimal digits an operator configured.
    pub fn parse_hex(input: &str) -> Result<Self, String> {
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(input.trim(), &mut bytes).map_err(|_| {
            format!(
                "{:?} is not a SHA-256 digest (64 hexadecimal digits; make one with `punctual hash-token`)",
                input.trim()
            )
        })?;
        Ok(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The businesses a token may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `*`: every business, including the queue-wide views.
    AllBusinesses,
    /// Only these business ids (never empty).
    Businesses(BTreeSet<String>),
}

impl Scope {
    /// `*`, or business ids separated by commas.
    pub fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        if input == "*" {
            return Ok(Scope::AllBusinesses);
        }
        let mut businesses = BTreeSet::new();
        for part in input.split(',').filter(|part| !part.trim().is_empty()) {
            let id = ExternalId::parse("business_id", part).map_err(|error| error.to_string())?;
            businesses.insert(id.as_str().to_owned());
        }
        if businesses.is_empty() {
            return Err("expected `*` or business ids separated by commas".to_owned());
        }
        Ok(Scope::Businesses(businesses))
    }
}

/// One configured token: `DIGEST=SCOPE` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub digest: TokenDigest,
    pub scope: Scope,
}

impl TokenGrant {
    /// `<sha256-hex>=<business>[,<business>…]` or `<sha256-hex>=*`.
    pub fn parse_assignment(input: &str) -> Result<Self, String> {
        let (digest, scope) = input
            .split_once('=')
            .ok_or_else(|| "expected SHA256_HEX=BUSINESS[,BUSINESS…] or SHA256_HEX=*".to_owned())?;
        Ok(Self {
            digest: TokenDigest::parse_hex(digest)?,
            scope: Scope::parse(scope)?,
        })
    }
}

/// Why the tokens could not be set up; `serve` refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read the tokens file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {reason}")]
    FileLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("the tokens file {0} holds no token")]
    EmptyFile(PathBuf),
    #[error("the token digest {0} is configured twice")]
    Duplicate(String),
    #[error(
        "no auth tokens are configured and {listen_addr} is not a loopback address: \
         anyone who can reach it could read and change every business's posts. \
         Configure --auth-tokens-file or --auth-token-hash, listen on 127.0.0.1, \
         or pass --allow-unauthenticated if the network itself is trusted"
    )]
    TokensRequired { listen_addr: SocketAddr },
}

/// Why a call is refused. Mapped to a gRPC status in `grpc::status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send `authorization: Bearer <token>`")]
    MissingToken,
    #[error("invalid credentials: the bearer token is not known")]
    UnknownToken,
    #[error("this token may not access business {0:?}")]
    BusinessNotAllowed(String),
    #[error(
        "name one of this token's businesses in business_id (views across every business need a `*` token)"
    )]
    BusinessRequired,
}

/// Whom a request runs as: what its token may touch.
#[derive(Debug, Clone)]
pub struct Caller {
    scope: Arc<Scope>,
}

impl Caller {
    /// A caller that may touch every business: a `*` token, or any caller
    /// when the server runs without tokens.
    pub fn unrestricted() -> Self {
        Self {
            scope: Arc::new(Scope::AllBusinesses),
        }
    }

    pub fn is_unrestricted(&self) -> bool {
        matches!(*self.scope, Scope::AllBusinesses)
    }

    /// Whether the caller may touch `business_id` (compared as the service
    /// reads it: surrounding spaces removed).
    pub fn may_access(&self, business_id: &str) -> bool {
        match &*self.scope {
            Scope::AllBusinesses => true,
            Scope::Businesses(allowed) => allowed.contains(business_id.trim()),
        }
    }

    /// Refuses a business the caller may not touch. An empty id is left to
    /// the service to refuse for an unrestricted caller, and refused here
    /// for a restricted one (it names none of its businesses).
    pub fn check_business(&self, business_id: &str) -> Result<(), AuthError> {
        let business_id = business_id.trim();
        if self.may_access(business_id) {
            Ok(())
        } else if business_id.is_empty() {
            Err(AuthError::BusinessRequired)
        } else {
            Err(AuthError::BusinessNotAllowed(crate::domain::echo(
                business_id,
            )))
        }
    }

    /// The business filter to apply for a request whose business filter is
    /// optional (empty meaning every business). A restricted caller that
    /// names none gets its only business, or is refused when it has several,
    /// so that no listing, stream or statistic ever spans a business it may
    /// not see.
    pub fn business_filter(&self, requested: &str) -> Result<String, AuthError> {
        let requested = requested.trim();
        if !requested.is_empty() {
            self.check_business(requested)?;
            return Ok(requested.to_owned());
        }
        match &*self.scope {
            Scope::AllBusinesses => Ok(String::new()),
            Scope::Businesses(allowed) if allowed.len() == 1 => {
                Ok(allowed.iter().next().cloned().unwrap_or_default())
            }
            Scope::Businesses(_) => Err(AuthError::BusinessRequired),
        }
    }
}

/// Turns the `authorization` header of a call into a [`Caller`].
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// `None` runs open: every caller is unrestricted.
    tokens: Option<Arc<HashMap<TokenDigest, Caller>>>,
}

impl Authenticator {
    /// Every caller is unrestricted; see [`Authenticator::from_config`] for
    /// when that is allowed.
    pub fn open() -> Self {
        Self { tokens: None }
    }

    pub fn with_tokens(grants: Vec<TokenGrant>) -> Result<Self, AuthConfigError> {
        let mut tokens = HashMap::with_capacity(grants.len());
        for grant in grants {
            let caller = Caller {
                scope: Arc::new(grant.scope),
            };
            if tokens.insert(grant.digest, caller).is_some() {
                return Err(AuthConfigError::Duplicate(grant.digest.to_hex()));
            }
        }
        Ok(Self {
            tokens: Some(Arc::new(tokens)),
        })
    }

    /// The tokens of the tokens file and of the command line. Without any,
    /// the server runs open only on a loopback address (or when the operator
    /// explicitly allows it), and says so loudly.
    pub fn from_config(
        tokens_file: Option<&Path>,
        inline: &[TokenGrant],
        listen_addr: SocketAddr,
        allow_unauthenticated: bool,
    ) -> Result<Self, AuthConfigError> {
        let mut grants = match tokens_file {
            Some(path) => read_tokens_file(path)?,
            None => Vec::new(),
        };
        grants.extend(inline.iter().cloned());
        if !grants.is_empty() {
            tracing::info!(tokens = grants.len(), "bearer tokens are required");
            return Self::with_tokens(grants);
        }
        if listen_addr.ip().is_loopback() {
            tracing::warn!(
                %listen_addr,
                "NO AUTHENTICATION: no auth tokens are configured, so every caller on this machine may read and change every business's posts"
            );
            Ok(Self::open())
        } else if allow_unauthenticated {
            tracing::warn!(
                %listen_addr,
                "NO AUTHENTICATION on a network address (--allow-unauthenticated): anyone who can reach it may read and change every business's posts"
            );
            Ok(Self::open())
        } else {
            Err(AuthConfigError::TokensRequired { listen_addr })
        }
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_none()
    }

    /// Checks the value of an `authorization` header (`Bearer <token>`).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller::unrestricted());
        };
        let token = authorization
            .and_then(bearer_token)
            .ok_or(AuthError::MissingToken)?;
        tokens
            .get(&TokenDigest::of(token))
            .cloned()
            .ok_or(AuthError::UnknownToken)
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Lines of `<sha256-hex> <business>[,<business>…]` or `<sha256-hex> *`;
/// blank lines and lines starting with `#` are skipped.
pub fn parse_tokens_file(path: &Path, text: &str) -> Result<Vec<TokenGrant>, AuthConfigError> {
    let mut grants = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at_line = |reason: String| AuthConfigError::FileLine {
            path: path.to_owned(),
            line: index + 1,
            reason,
        };
        let (digest, scope) = line.split_once(char::is_whitespace).ok_or_else(|| {
            at_line("expected `<sha256-hex> <business>[,<business>…]` or `<sha256-hex> *`".into())
        })?;
        grants.push(TokenGrant {
            digest: TokenDigest::parse_hex(digest).map_err(at_line)?,
            scope: Scope::parse(scope).map_err(at_line)?,
        });
    }
    Ok(grants)
}

fn read_tokens_file(path: &Path) -> Result<Vec<TokenGrant>, AuthConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let grants = parse_tokens_file(path, &text)?;
    // An operator who names a file means to require tokens; an empty one
    // (e.g. an unfilled secret) must not quietly run the server open.
    if grants.is_empty() {
        return Err(AuthConfigError::EmptyFile(path.to_owned()));
    }
    Ok(grants)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(token: &str, scope: &str) -> TokenGrant {
        TokenGrant {
            digest: TokenDigest::of(token),
            scope: Scope::parse(scope).unwrap(),
        }
    }

    #[test]
    fn a_digest_is_the_sha256_of_the_token() {
        // printf %s secret | sha256sum
        assert_eq!(
            TokenDigest::of("secret").to_hex(),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        let parsed = TokenDigest::parse_hex(
            "2BB80D537B1DA3E38BD30361AA855686BDE0EACD7162FEF6A25FE97BF527A25B",
        )
        .unwrap();
        assert_eq!(parsed, TokenDigest::of("secret"));
        assert!(TokenDigest::parse_hex("secret").is_err());
        assert!(TokenDigest::parse_hex(&"0".repeat(63)).is_err());
    }

    #[test]
    fn tokens_are_checked_by_digest_and_scheme() {
        let auth =
            Authenticator::with_tokens(vec![grant("alpha", "biz-a"), grant("root", "*")]).unwrap();
        assert_eq!(
            auth.authenticate(None).unwrap_err(),
            AuthError::MissingToken
        );
        assert_eq!(
            auth.authenticate(Some("Basic alpha")).unwrap_err(),
            AuthError::MissingToken
        );
        assert_eq!(
            auth.authenticate(Some("Bearer ")).unwrap_err(),
            AuthError::MissingToken
        );
        assert_eq!(
            auth.authenticate(Some("Bearer beta")).unwrap_err(),
            AuthError::UnknownToken
        );
        let alpha = auth.authenticate(Some("bearer  alpha ")).unwrap();
        assert!(alpha.may_access("biz-a"));
        assert!(alpha.may_access(" biz-a "));
        assert!(!alpha.may_access("biz-b"));
        assert!(!alpha.is_unrestricted());
        let root = auth.authenticate(Some("Bearer root")).unwrap();
        assert!(root.is_unrestricted());
        assert!(root.may_access("anything"));
    }

    #[test]
    fn an_open_server_lets_everyone_in_unrestricted() {
        let caller = Authenticator::open().authenticate(None).unwrap();
        assert!(caller.is_unrestricted());
    }

    #[test]
    fn an_unnamed_business_is_the_callers_only_one_or_refused() {
        let one = Authenticator::with_tokens(vec![grant("t", "biz-a")])
            .unwrap()
            .authenticate(Some("Bearer t"))
            .unwrap();
        assert_eq!(one.business_filter("").unwrap(), "biz-a");
        assert_eq!(one.business_filter(" biz-a").unwrap(), "biz-a");
        assert_eq!(
            one.business_filter("biz-b").unwrap_err(),
            AuthError::BusinessNotAllowed("biz-b".into())
        );
        let two = Authenticator::with_tokens(vec![grant("t", "biz-a,biz-b")])
            .unwrap()
            .authenticate(Some("Bearer t"))
            .unwrap();
        assert_eq!(
            two.business_filter("").unwrap_err(),
            AuthError::BusinessRequired
        );
        assert_eq!(two.business_filter("biz-b").unwrap(), "biz-b");
        assert_eq!(Caller::unrestricted().business_filter("").unwrap(), "");
        assert_eq!(
            one.check_business("").unwrap_err(),
            AuthError::BusinessRequired
        );
        assert!(Caller::unrestricted().check_business("").is_ok());
    }

    #[test]
    fn the_tokens_file_has_one_token_per_line() {
        let path = Path::new("tokens");
        let text = format!(
            "# operators\n\n{} *\n{}   biz-a, biz-b\n",
            TokenDigest::of("root").to_hex(),
            TokenDigest::of("alpha").to_hex()
        );
        let grants = parse_tokens_file(path, &text).unwrap();
        assert_eq!(
            grants,
            vec![grant("root", "*"), grant("alpha", "biz-a,biz-b")]
        );

        let error = parse_tokens_file(path, "# ok\nnot-a-digest biz-a\n").unwrap_err();
        assert!(error.to_string().starts_with("tokens, line 2:"), "{error}");
        let lone = format!("{}\n", TokenDigest::of("x").to_hex());
        assert!(parse_tokens_file(path, &lone).is_err());
        let empty_scope = format!("{} ,\n", TokenDigest::of("x").to_hex());
        assert!(parse_tokens_file(path, &empty_scope).is_err());
    }

    #[test]
    fn a_token_configured_twice_is_refused() {
        let error =
            Authenticator::with_tokens(vec![grant("t", "biz-a"), grant("t", "biz-b")]).unwrap_err();
        assert!(matches!(error, AuthConfigError::Duplicate(_)));
    }

    #[test]
    fn command_line_grants_read_digest_equals_scope() {
        let digest = TokenDigest::of("t").to_hex();
        assert_eq!(
            TokenGrant::parse_assignment(&format!("{digest}=biz-a,biz-b")).unwrap(),
            grant("t", "biz-a,biz-b")
        );
        assert!(TokenGrant::parse_assignment(&digest).is_err());
        assert!(TokenGrant::parse_assignment("t=biz-a").is_err());
    }

    #[test]
    fn without_tokens_only_a_loopback_address_runs_open() {
        let loopback: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let loopback_v6: SocketAddr = "[::1]:50051".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        assert!(
            Authenticator::from_config(None, &[], loopback, false)
                .unwrap()
                .is_open()
        );
        assert!(
            Authenticator::from_config(None, &[], loopback_v6, false)
                .unwrap()
                .is_open()
        );
        let refused = Authenticator::from_config(None, &[], any, false).unwrap_err();
        assert!(matches!(refused, AuthConfigError::TokensRequired { .. }));
        assert!(
            Authenticator::from_config(None, &[], any, true)
                .unwrap()
                .is_open()
        );
        let tokens = [grant("t", "*")];
        assert!(
            !Authenticator::from_config(None, &tokens, any, false)
                .unwrap()
                .is_open()
        );
    }

    #[test]
    fn a_missing_tokens_file_stops_start_up() {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let error = Authenticator::from_config(
            Some(Path::new("/nonexistent/punctual-tokens")),
            &[],
            loopback,
            false,
        )
        .unwrap_err();
        assert!(matches!(error, AuthConfigError::ReadFile { .. }));
    }
}
