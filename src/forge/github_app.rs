//! GitHub App authentication: an RS256 JWT signed with the App's private key finds the
//! repository's installation and mints an installation token for that one repository. The
//! token is kept by the run's [`super::Forge`] (no process-wide state: a server runs many
//! gates in one process) and minted again shortly before it expires (tokens live an hour;
//! `gate` may wait longer than that for an approval and annotate again).

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::github_api::{Api, ApiError};
use crate::http::HttpClient;
use crate::settings::GithubApp;

/// GitHub accepts app JWTs that expire at most 10 minutes ahead; `iat` is set a minute in
/// the past to absorb clock drift, so the JWT spans 10 minutes in all.
const JWT_BACKDATE_SECS: i64 = 60;
const JWT_LIFETIME_SECS: i64 = 9 * 60;
/// A cached token this close to its expiry is minted again.
const REFRESH_MARGIN_SECS: i64 = 5 * 60;

#[derive(Serialize)]
struct Claims<'a> {
    iat: i64,
    exp: i64,
    iss: Issuer<'a>,
}

/// `iss`: the numeric App ID, or the App's client ID (what GitHub now recommends).
#[derive(Serialize)]
#[serde(untagged)]
enum Issuer<'a> {
    AppId(u64),
    ClientId(&'a str),
}

/// Why no installation token could be had. The key's bytes never appear in it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppAuthError {
    #[error("no signing backend for the GitHub App JWT in this build")]
    NoSigner,
    #[error("the GitHub App private key is not an RSA private key in PEM form ({0})")]
    BadKey(#[source] jsonwebtoken::errors::Error),
    #[error("cannot sign the GitHub App JWT: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("the GitHub App {app} is not installed on {owner}/{repo} ({source})")]
    NotInstalled {
        app: String,
        owner: String,
        repo: String,
        #[source]
        source: Box<ApiError>,
    },
    #[error("GitHub refused the App JWT: check the App ID and private key ({0})")]
    JwtRefused(#[source] Box<ApiError>),
    #[error(transparent)]
    Api(Box<ApiError>),
    #[error("cannot mint an installation token: {0}")]
    Mint(#[source] Box<ApiError>),
}

/// The App JWT, valid from a minute ago for the next nine minutes.
pub(crate) fn jwt(
    app_id: &str,
    private_key: &SecretString,
    now: i64,
) -> Result<SecretString, AppAuthError> {
    // The process's one jsonwebtoken provider; installing it again changes nothing.
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jwt_crypto::PROVIDER);
    if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
        return Err(AppAuthError::NoSigner);
    }
    let pem = normalise_pem(private_key.expose_secret());
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(AppAuthError::BadKey)?;
    let id = app_id.trim();
    let iss = match id.parse::<u64>() {
        Ok(n) => Issuer::AppId(n),
        Err(_) => Issuer::ClientId(id),
    };
    let claims = Claims {
        iat: now - JWT_BACKDATE_SECS,
        exp: now + JWT_LIFETIME_SECS,
        iss,
    };
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key)
        .map(SecretString::from)
        .map_err(AppAuthError::Sign)
}

/// jsonwebtoken's cryptography on `ring`, the one crypto library of the build (rustls uses
/// it too): RS256 signing, which is all a GitHub App JWT needs. Any other algorithm, and
/// every verification, is refused: changegate signs its own JWTs and verifies none.
mod jwt_crypto {
    use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
    use jsonwebtoken::errors::{ErrorKind, Result, new_error};
    use jsonwebtoken::signature::{Error as SignatureError, Signer};
    use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
    use ring::rand::SystemRandom;
    use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

    pub(super) const PROVIDER: CryptoProvider = CryptoProvider {
        signer_factory,
        verifier_factory,
        key_utils: KeyUtils::new_unimplemented(),
    };

    fn signer_factory(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
        if *algorithm != Algorithm::RS256 {
            return Err(new_error(ErrorKind::UnsupportedAlgorithm));
        }
        if key.family() != AlgorithmFamily::Rsa {
            return Err(new_error(ErrorKind::InvalidKeyFormat));
        }
        // The PKCS#1 DER that `EncodingKey::from_rsa_pem` took out of the PEM.
        let pair = RsaKeyPair::from_der(key.as_bytes())
            .map_err(|e| new_error(ErrorKind::InvalidRsaKey(e.to_string())))?;
        Ok(Box::new(Rs256(pair)))
    }

    fn verifier_factory(_: &Algorithm, _: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
        Err(new_error(ErrorKind::UnsupportedAlgorithm))
    }

    struct Rs256(RsaKeyPair);

    impl Signer<Vec<u8>> for Rs256 {
        fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, SignatureError> {
            let mut signature = vec![0; self.0.public().modulus_len()];
            self.0
                .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut signature)
                .map_err(|_| SignatureError::new())?;
            Ok(signature)
        }
    }

    impl JwtSigner for Rs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::RS256
        }
    }
}

/// CI secret stores sometimes hold a PEM with literal `\n` sequences instead of newlines.
fn normalise_pem(text: &str) -> String {
    let text = text.trim();
    if !text.contains('\n') && text.contains("\\n") {
        text.replace("\\n", "\n")
    } else {
        text.to_string()
    }
}

struct Cached {
    /// API base, App and repository the token was minted for.
    scope: String,
    token: SecretString,
    expires_at: Option<DateTime<Utc>>,
}

/// The installation token of one run, kept between its annotations so that a gate mints
/// one token however often it annotates.
#[derive(Default)]
pub(crate) struct TokenCache {
    // A lock, not a cell: the forge is shared by reference and the token may be replaced
    // when it nears its expiry. Never held across an await.
    cached: Mutex<Option<Cached>>,
}

impl TokenCache {
    fn get(&self, scope: &str, now: DateTime<Utc>) -> Option<SecretString> {
        let guard = self.cached.lock().ok()?;
        let c = guard.as_ref().filter(|c| c.scope == scope)?;
        let fresh = c
            .expires_at
            .is_none_or(|at| (at - now).num_seconds() > REFRESH_MARGIN_SECS);
        fresh.then(|| c.token.clone())
    }

    fn store(&self, scope: String, token: SecretString, expires_at: Option<DateTime<Utc>>) {
        if let Ok(mut guard) = self.cached.lock() {
            *guard = Some(Cached {
                scope,
                token,
                expires_at,
            });
        }
    }
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

#[derive(Deserialize)]
struct AccessToken {
    token: String,
    expires_at: Option<DateTime<Utc>>,
}

/// An installation token for `owner/repo`, from the run's cache or freshly minted.
pub(crate) async fn installation_token(
    cache: &TokenCache,
    http: &HttpClient,
    base_url: &str,
    app: &GithubApp,
    owner: &str,
    repo: &str,
) -> Result<SecretString, AppAuthError> {
    let scope = format!("{base_url} {} {owner}/{repo}", app.id);
    let now = Utc::now();
    if let Some(token) = cache.get(&scope, now) {
        return Ok(token);
    }
    let jwt = jwt(&app.id, &app.private_key, now.timestamp())?;
    let api = Api::new(http, base_url, &jwt).map_err(|e| AppAuthError::Api(Box::new(e)))?;
    let installation: Installation = api
        .json(
            Method::GET,
            &format!("/repos/{owner}/{repo}/installation"),
            None,
        )
        .await
        .map_err(|e| match e.status() {
            Some(404) => AppAuthError::NotInstalled {
                app: app.id.clone(),
                owner: owner.to_string(),
                repo: repo.to_string(),
                source: Box::new(e),
            },
            Some(401) => AppAuthError::JwtRefused(Box::new(e)),
            _ => AppAuthError::Api(Box::new(e)),
        })?;
    // Scoped to this repository only; its permissions are those the App was granted.
    let body = serde_json::json!({ "repositories": [repo] });
    let minted: AccessToken = api
        .json(
            Method::POST,
            &format!("/app/installations/{}/access_tokens", installation.id),
            Some(&body),
        )
        .await
        .map_err(|e| AppAuthError::Mint(Box::new(e)))?;
    let token = SecretString::from(minted.token);
    cache.store(scope, token.clone(), minted.expires_at);
    tracing::debug!(
        installation = installation.id,
        "GitHub App installation token minted"
    );
    Ok(token)
}

/// An installation token for `repo` of the installation a webhook named
/// (`installation.id`): no lookup of the installation, and no cache (a server mints one
/// per delivery; the token lives an hour, longer than a delivery's work but for a wait).
pub(crate) async fn token_for_installation(
    http: &HttpClient,
    base_url: &str,
    app: &GithubApp,
    installation: u64,
    repo: &str,
) -> Result<SecretString, AppAuthError> {
    let jwt = jwt(&app.id, &app.private_key, Utc::now().timestamp())?;
    let api = Api::new(http, base_url, &jwt).map_err(|e| AppAuthError::Api(Box::new(e)))?;
    let body = serde_json::json!({ "repositories": [repo] });
    let minted: AccessToken = api
        .json(
            Method::POST,
            &format!("/app/installations/{installation}/access_tokens"),
            Some(&body),
        )
        .await
        .map_err(|e| match e.status() {
            Some(401) => AppAuthError::JwtRefused(Box::new(e)),
            _ => AppAuthError::Mint(Box::new(e)),
        })?;
    tracing::debug!(installation, "GitHub App installation token minted");
    Ok(SecretString::from(minted.token))
}

/// Whether GitHub answers and takes the App's JWT (`GET /app`): what a server's readiness
/// probe asks.
pub(crate) async fn check_app(
    http: &HttpClient,
    base_url: &str,
    app: &GithubApp,
) -> Result<(), AppAuthError> {
    let jwt = jwt(&app.id, &app.private_key, Utc::now().timestamp())?;
    let api = Api::new(http, base_url, &jwt).map_err(|e| AppAuthError::Api(Box::new(e)))?;
    api.json::<serde_json::Value>(Method::GET, "/app", None)
        .await
        .map_err(|e| match e.status() {
            Some(401) => AppAuthError::JwtRefused(Box::new(e)),
            _ => AppAuthError::Api(Box::new(e)),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_with_escaped_newlines_is_repaired() {
        assert_eq!(
            normalise_pem("-----BEGIN X-----\\nabc\\n-----END X-----\n"),
            "-----BEGIN X-----\nabc\n-----END X-----"
        );
        assert_eq!(normalise_pem("a\nb"), "a\nb");
    }

    #[test]
    fn a_bad_key_is_a_clear_error_that_shows_no_key() {
        let err = jwt(
            "123",
            &SecretString::from("not a key but a secret-ish string"),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not an RSA private key"), "{err}");
        assert!(!err.contains("secret-ish"), "{err}");
    }

    #[test]
    fn cache_is_scoped_and_refreshes_before_expiry() {
        let now = Utc::now();
        let cache = TokenCache::default();
        cache.store(
            "a".into(),
            SecretString::from("t1"),
            Some(now + chrono::Duration::minutes(30)),
        );
        assert_eq!(
            cache
                .get("a", now)
                .map(|t| t.expose_secret().to_string())
                .as_deref(),
            Some("t1")
        );
        assert!(cache.get("b", now).is_none());
        cache.store(
            "a".into(),
            SecretString::from("t2"),
            Some(now + chrono::Duration::minutes(2)),
        );
        assert!(cache.get("a", now).is_none());
    }
}
