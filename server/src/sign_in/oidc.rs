//! Single sign-on with an OpenID Connect provider (Keycloak, Okta, Entra ID, Google, …): the
//! authorization code flow with PKCE, for a confidential client.
//!
//! 1. `start`: a random `state`, `nonce` and PKCE verifier go into a short-lived cookie signed
//!    with the server's key (so every replica can finish what another started, and nothing is
//!    stored for people who never come back); the browser goes to the provider.
//! 2. `finish`: the provider sends the browser back with a code. The state must match the
//!    cookie's (no sign-in this browser did not start), the code is exchanged with the
//!    verifier (a stolen code is useless elsewhere), and the ID token is checked: signature by
//!    a key of the provider's JWKS (asymmetric algorithms only), issuer, audience (and `azp`
//!    when there are several), expiry, and the nonce of this very sign-in.
//!
//! Discovery and keys come from `<issuer>/.well-known/openid-configuration`; the document must
//! name the configured issuer exactly. The checks are jsonwebtoken's (signature, `iss`, `aud`,
//! `exp`) plus this module's (algorithm allow-list, `azp`, nonce, `email_verified`): small
//! enough to read in one sitting, on crates the server already has.

use std::time::{Duration as StdDuration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{Duration, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::{TokenKeys, ISSUER};
use crate::error::{Error, Result};
use crate::secrets::random_secret;

/// The cookie that carries a sign-in in progress.
pub const LOGIN_COOKIE: &str = "custody_oidc";
/// Audience of that cookie's signed claims (never accepted anywhere else).
const LOGIN_AUDIENCE: &str = "custody-oidc-login";
/// How long a person may take at the provider.
pub const LOGIN_LIFETIME: Duration = Duration::minutes(10);
/// Discovery and keys are fetched again after this long.
const CACHE_FOR: StdDuration = StdDuration::from_secs(3600);
/// An unknown key id fetches the keys again, at most this often (providers rotate keys; a
/// flood of made-up key ids must not become a flood of requests to the provider).
const REFRESH_AT_MOST_EVERY: StdDuration = StdDuration::from_secs(60);
/// Clock skew allowed between the provider and this server.
const LEEWAY_SECONDS: u64 = 60;
/// Signature algorithms accepted from a provider: asymmetric only (`none` and the HMAC family,
/// whose "key" would be public, never).
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The provider as configured.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// `openid` first, then the configured ones.
    pub scopes: Vec<String>,
    pub groups_claim: String,
    /// Label of the sign-in button.
    pub label: String,
    /// `<public url>/sign-in/oidc/callback`, registered at the provider.
    pub redirect_uri: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

struct Discovered {
    metadata: Metadata,
    keys: JwkSet,
    fetched: Instant,
}

/// A configured provider, with its discovery document and keys cached.
pub struct Provider {
    settings: OidcSettings,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Option<Discovered>>,
}

/// What the provider vouched for.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub email: String,
    pub groups: Vec<String>,
}

/// A sign-in in progress: where to send the browser, and its cookie.
pub struct LoginStart {
    pub authorization_url: String,
    pub cookie: String,
}

#[derive(Serialize, Deserialize)]
struct LoginClaims {
    iss: String,
    aud: String,
    exp: i64,
    state: String,
    nonce: String,
    verifier: String,
    next: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn unauthenticated(message: impl Into<String>) -> Error {
    Error::Unauthenticated(message.into())
}

impl Provider {
    pub fn new(settings: OidcSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(StdDuration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Provider {
            settings,
            http,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    pub fn label(&self) -> &str {
        &self.settings.label
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T> {
        let response = self.http.get(url).send().await.map_err(|e| {
            Error::Unavailable(format!("the identity provider cannot be reached: {e}"))
        })?;
        if !response.status().is_success() {
            return Err(Error::Unavailable(format!(
                "the identity provider answered {} for {url}",
                response.status()
            )));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::Unavailable(format!("reading {url}: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| {
            Error::Unavailable(format!("the identity provider sent bad JSON at {url}: {e}"))
        })
    }

    /// Discovery and keys, from the cache unless stale (or `refresh_keys` and the keys are
    /// older than the refresh floor).
    async fn discovered(&self, refresh_keys: bool) -> Result<(Metadata, JwkSet)> {
        let mut cache = self.cache.lock().await;
        let fresh = cache.as_ref().is_some_and(|d| {
            let age = d.fetched.elapsed();
            age < CACHE_FOR && !(refresh_keys && age >= REFRESH_AT_MOST_EVERY)
        });
        if !fresh {
            let url = format!(
                "{}/.well-known/openid-configuration",
                self.settings.issuer.trim_end_matches('/')
            );
            let metadata: Metadata = self.get_json(&url).await?;
            if metadata.issuer != self.settings.issuer {
                return Err(unauthenticated(format!(
                    "the identity provider at {url} says its issuer is `{}`, not the configured `{}`",
                    metadata.issuer, self.settings.issuer
                )));
            }
            let keys: JwkSet = self.get_json(&metadata.jwks_uri).await?;
            *cache = Some(Discovered {
                metadata,
                keys,
                fetched: Instant::now(),
            });
        }
        let d = cache.as_ref().expect("filled above");
        Ok((d.metadata.clone(), d.keys.clone()))
    }

    /// Begins a sign-in that returns to `next`.
    pub async fn start(&self, keys: &TokenKeys, next: &str) -> Result<LoginStart> {
        let (metadata, _) = self.discovered(false).await?;
        let (state, nonce, verifier) = (random_secret(), random_secret(), random_secret());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let cookie = keys.sign_for(&LoginClaims {
            iss: ISSUER.into(),
            aud: LOGIN_AUDIENCE.into(),
            exp: (Utc::now() + LOGIN_LIFETIME).timestamp(),
            state: state.clone(),
            nonce: nonce.clone(),
            verifier,
            next: next.to_owned(),
        })?;
        let mut url = url::Url::parse(&metadata.authorization_endpoint).map_err(|e| {
            Error::Unavailable(format!(
                "the identity provider's authorization endpoint is not a URL: {e}"
            ))
        })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", &self.settings.redirect_uri)
            .append_pair("scope", &self.settings.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(LoginStart {
            authorization_url: url.into(),
            cookie,
        })
    }

    /// Completes a sign-in from the provider's answer (`state`, `code`, and `iss` when the
    /// provider names itself, RFC 9207: an answer from another issuer is a mix-up attack) and
    /// this browser's cookie: who signed in, and where they were going.
    pub async fn finish(
        &self,
        keys: &TokenKeys,
        cookie: Option<&str>,
        state: &str,
        code: &str,
        issuer: Option<&str>,
    ) -> Result<(Identity, String)> {
        if issuer.is_some_and(|iss| iss != self.settings.issuer) {
            return Err(unauthenticated(
                "the answer comes from another issuer than the configured identity provider",
            ));
        }
        let login: LoginClaims = cookie
            .and_then(|c| keys.verify_for(c, LOGIN_AUDIENCE).ok())
            .ok_or_else(|| {
                unauthenticated(
                    "this sign-in was not started in this browser, or took too long; start again",
                )
            })?;
        let same_state: bool = Sha256::digest(login.state.as_bytes())
            .iter()
            .zip(Sha256::digest(state.as_bytes()).iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if !same_state {
            return Err(unauthenticated(
                "the provider's answer belongs to another sign-in than the one this browser started (state mismatch)",
            ));
        }
        let (metadata, jwks) = self.discovered(false).await?;
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let response = self
            .http
            .post(&metadata.token_endpoint)
            .basic_auth(
                encode(&self.settings.client_id),
                Some(encode(&self.settings.client_secret)),
            )
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.settings.redirect_uri),
                ("code_verifier", &login.verifier),
            ])
            .send()
            .await
            .map_err(|e| {
                Error::Unavailable(format!("the identity provider cannot be reached: {e}"))
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::Unavailable(format!("reading the token response: {e}")))?;
        let answer: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            unauthenticated(format!(
                "the identity provider's token endpoint answered {status} without JSON"
            ))
        })?;
        let id_token = match (status.is_success(), answer.id_token) {
            (true, Some(token)) => token,
            _ => {
                return Err(unauthenticated(format!(
                    "the identity provider refused the sign-in: {} {}",
                    answer.error.as_deref().unwrap_or("no ID token"),
                    answer.error_description.as_deref().unwrap_or("")
                )))
            }
        };
        let expected = Expected {
            issuer: &metadata.issuer,
            client_id: &self.settings.client_id,
            nonce: &login.nonce,
            groups_claim: &self.settings.groups_claim,
        };
        let identity = match check_id_token(&id_token, &jwks, &expected) {
            Err(UnknownKey) => {
                // The provider may have rotated its keys since they were fetched.
                let (_, jwks) = self.discovered(true).await?;
                check_id_token(&id_token, &jwks, &expected)
                    .map_err(|_| unauthenticated("the ID token is signed by an unknown key"))??
            }
            Ok(result) => result?,
        };
        Ok((identity, login.next))
    }
}

/// What an ID token must say.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub groups_claim: &'a str,
}

/// The token names a key the set does not hold (fetch the keys again, once).
#[derive(Debug)]
pub struct UnknownKey;

/// Checks an ID token against the provider's keys and this sign-in; the outer error asks for
/// fresh keys, the inner one refuses the token.
pub fn check_id_token(
    token: &str,
    jwks: &JwkSet,
    expected: &Expected<'_>,
) -> std::result::Result<Result<Identity>, UnknownKey> {
    let refuse = |why: String| {
        Ok(Err(unauthenticated(format!(
            "the ID token is refused: {why}"
        ))))
    };
    let header = match jsonwebtoken::decode_header(token) {
        Ok(h) => h,
        Err(e) => return refuse(format!("unreadable header ({e})")),
    };
    if !ALGORITHMS.contains(&header.alg) {
        return refuse(format!("algorithm {:?} is not accepted", header.alg));
    }
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid),
        None if jwks.keys.len() == 1 => jwks.keys.first(),
        None => None,
    };
    let Some(jwk) = jwk else {
        return Err(UnknownKey);
    };
    let key = match DecodingKey::from_jwk(jwk) {
        Ok(k) => k,
        Err(e) => return refuse(format!("the provider's key is unusable ({e})")),
    };
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = LEEWAY_SECONDS;
    let claims = match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
        token,
        &key,
        &validation,
    ) {
        Ok(data) => data.claims,
        Err(e) => return refuse(e.to_string()),
    };
    // Several audiences: the token must have been issued to this client (`azp`).
    if claims["aud"].as_array().is_some_and(|a| a.len() > 1)
        && claims.get("azp").and_then(|v| v.as_str()) != Some(expected.client_id)
    {
        return refuse("it was issued to another client (azp)".into());
    }
    if claims.get("nonce").and_then(|v| v.as_str()) != Some(expected.nonce) {
        return refuse("its nonce is not this sign-in's".into());
    }
    let Some(email) = claims.get("email").and_then(|v| v.as_str()) else {
        return refuse("it carries no email (ask for the `email` scope)".into());
    };
    if claims.get("email_verified").and_then(|v| v.as_bool()) == Some(false) {
        return refuse(format!("the provider has not verified {email}"));
    }
    let groups = match claims.get(expected.groups_claim) {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        Some(serde_json::Value::Array(many)) => many
            .iter()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
        Some(other) => {
            return refuse(format!(
                "its `{}` claim is not a list of names: {other}",
                expected.groups_claim
            ))
        }
    };
    Ok(Ok(Identity {
        email: email.to_owned(),
        groups,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{json, Value};

    /// A 2048-bit RSA key made for these tests only (PKCS#1 DER), and its public half.
    const TEST_KEY_DER: &str = "MIIEoQIBAAKCAQEAjwiIyn5GuPTNiQHssAf/saGUpHTKf8+4n7FYBFnwHDyjJfGbF9pdTuGw//F/DrZU3PI9qY65XySgAXE94IqhF1dRSweE7D3S00qm6LEO/OBQV3WHO6lRqIMRvMKDbtUDNK071ekxzmvVq6fuXh8kPYAo90zGybTpMuVuDA7rAtG/v7H+BSl+p1C9gk4VLJpxM+/MO4gae24Od/l/yxbJU07fzNFV9FryQV7HoJmSbT5tvvJUWq9WYljcw1kki7pSr7JPBc8npmsXZtu58P3ZtLXnZmYw++CYL5zZeUTWggmSs7AMUorEaGo/tpwd3a6YF4mAvVdecNYBMLaNyVw+eQIDAQABAoH/ff2GgNe6dDEu2wBW/LgPAujRhgtaVDsk5YXRggO2/ShsjX/Enb47csBaqRiQUuVI21aF+lU99BDO4HZfiuqR+31uniiBbZcHnhaj71QHX7g3DNL5zBPZWhYaCatNGtOHf18Y1dQTi0BxdkL2NPI5efLqIuv+Lq6su6hcx0JcwJ2wa/E3VPCO2IdeZL1EeOug9D9R6c0LLZDbRAXgNIC4jnrMgEfUFFikU3M/nasmFdOCKVFUpkY7GhaVAK7r9dRsY6BAsqx5RYC9Di9WsubW2YmonyTvLMpEpG8wtEyeDY2OV9j6Y2kDUGbuRFxKXcyXXTGOfAcMgoNDTE/6kUjBAoGBAMbrGikxxDR0C7eRCKhLgJpEZs/z7q1RsNPfLTDGzbIFualc31u0t7yZDjeJmjDdxbGEG0R1jIYIqVq68ArOyPal5Ezer7IXrqO0x0vz+q6xlSMDx3yst8pwZrpDsHJl8utLieeQqUz4gUaPxCcJAZtrNfwoATdVcBudvyJvofkpAoGBALgUBKjOrYDvn5mdI8Cl2rfbzw9li9or4qc0dwD+Le3MgPE1Y7JRmnGhZgxTQqDYuVajex2OK3bOQS3rultrfI9xn96XmLySvHDKkyF9l0aKXO0SzuOgpJxwpiJ1KnJ32ctJCfcUUEQYl4ZMi0Tn343M7N4Q+9y0lmc1OPMmV7TRAoGAE3iJ3ARqDzRYvUQuE8MoOHF/mtVmxIJdi6+pzb93/PgAf2p+1owu/AADWz5V4Hik1EZ5IM9czPXmFeJ8gqJRG4uLeFbH3efhiVa1t2KPZDAvx/ijuzlw2Bj+hTcA+4GtMIj5W7hWShl9FfoWmjeQd7Ub2K3VyKPNUHa1cdp5gVkCgYEAgL1nYNRjXji4q4vONG8Kn+n4T7FadTSaKQy1ahla7+RGDeykFFOkK3KQ12/numy4etKNSWdkGIw5467owAVVsVDrWZc2uDP73PqgmhynDyu3wAqWbXaticfzOUgubq5JwTYM5SPs2yND3iZshL2SiS7YPpssOviF9BqyAMRBNPECgYAb2t/3ccui3jISv++YDRy+Gxt6W0HBmJmFQLrBZr82uQU8fb7CmjK2d+CcBy5HdgtF9JAFlRdooEWT2grIU7pywzWejqV5K3vWpLD9XZU7wZWA0/xZi6wm5piHg+y6Hu7Uvv8C/mfBlE4jUAvLnM+8ohyRRNNMWT9jebi9v9HVxg==";
    const TEST_KEY_N: &str = "jwiIyn5GuPTNiQHssAf_saGUpHTKf8-4n7FYBFnwHDyjJfGbF9pdTuGw__F_DrZU3PI9qY65XySgAXE94IqhF1dRSweE7D3S00qm6LEO_OBQV3WHO6lRqIMRvMKDbtUDNK071ekxzmvVq6fuXh8kPYAo90zGybTpMuVuDA7rAtG_v7H-BSl-p1C9gk4VLJpxM-_MO4gae24Od_l_yxbJU07fzNFV9FryQV7HoJmSbT5tvvJUWq9WYljcw1kki7pSr7JPBc8npmsXZtu58P3ZtLXnZmYw--CYL5zZeUTWggmSs7AMUorEaGo_tpwd3a6YF4mAvVdecNYBMLaNyVw-eQ";

    fn jwks(kid: &str) -> JwkSet {
        serde_json::from_value(json!({"keys": [{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": TEST_KEY_N, "e": "AQAB"}]})).unwrap()
    }

    fn sign(kid: Option<&str>, claims: &Value) -> String {
        let key = EncodingKey::from_rsa_der(&STANDARD.decode(TEST_KEY_DER).unwrap());
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    fn good_claims() -> Value {
        let now = Utc::now().timestamp();
        json!({"iss": "https://idp.example", "aud": "custody", "sub": "u1", "iat": now, "exp": now + 300,
               "nonce": "n-1", "email": "Ana@Corp.example", "email_verified": true, "groups": ["model-risk", "ml"]})
    }

    const EXPECTED: Expected<'static> = Expected {
        issuer: "https://idp.example",
        client_id: "custody",
        nonce: "n-1",
        groups_claim: "groups",
    };

    fn check(token: &str) -> Result<Identity> {
        check_id_token(token, &jwks("k1"), &EXPECTED).expect("the key is known")
    }

    fn with(change: impl FnOnce(&mut Value)) -> String {
        let mut claims = good_claims();
        change(&mut claims);
        sign(Some("k1"), &claims)
    }

    #[test]
    fn a_genuine_token_names_the_person_and_their_groups() {
        let identity = check(&sign(Some("k1"), &good_claims())).unwrap();
        assert_eq!(identity.email, "Ana@Corp.example");
        assert_eq!(identity.groups, ["model-risk", "ml"]);
        let one = check(&with(|c| c["groups"] = json!("ml"))).unwrap();
        assert_eq!(one.groups, ["ml"]);
        let none = check(&with(|c| {
            c.as_object_mut().unwrap().remove("groups");
        }))
        .unwrap();
        assert!(none.groups.is_empty());
        // Several audiences are fine when the token was issued to this client.
        check(&with(|c| {
            c["aud"] = json!(["custody", "other"]);
            c["azp"] = json!("custody");
        }))
        .unwrap();
    }

    #[test]
    fn forged_or_foreign_tokens_are_refused() {
        let cases: Vec<(&str, String)> = vec![
            ("nonce", with(|c| c["nonce"] = json!("someone-elses"))),
            (
                "missing nonce",
                with(|c| {
                    c.as_object_mut().unwrap().remove("nonce");
                }),
            ),
            ("issuer", with(|c| c["iss"] = json!("https://evil.example"))),
            ("audience", with(|c| c["aud"] = json!("another-app"))),
            ("azp", with(|c| c["aud"] = json!(["custody", "other"]))),
            (
                "expired",
                with(|c| c["exp"] = json!(Utc::now().timestamp() - 3600)),
            ),
            (
                "unverified email",
                with(|c| c["email_verified"] = json!(false)),
            ),
            (
                "no email",
                with(|c| {
                    c.as_object_mut().unwrap().remove("email");
                }),
            ),
            ("groups not names", with(|c| c["groups"] = json!({"a": 1}))),
        ];
        for (what, token) in cases {
            let err = check(&token).expect_err(what);
            assert_eq!(err.code(), "UNAUTHENTICATED", "{what}");
        }
        // A signature that does not match the payload.
        let genuine = sign(Some("k1"), &good_claims());
        let forged = with(|c| c["email"] = json!("admin@corp.example"));
        let (head_and_payload, _) = forged.rsplit_once('.').unwrap();
        let (_, signature) = genuine.rsplit_once('.').unwrap();
        assert!(check(&format!("{head_and_payload}.{signature}")).is_err());
        // `none`, and HMAC keyed with the public modulus (the classic algorithm confusion).
        let payload = URL_SAFE_NO_PAD.encode(good_claims().to_string());
        let unsigned = format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#)
        );
        assert!(check(&unsigned).is_err());
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some("k1".into());
        let confused = jsonwebtoken::encode(
            &hs,
            &good_claims(),
            &EncodingKey::from_secret(TEST_KEY_N.as_bytes()),
        )
        .unwrap();
        assert!(check(&confused).is_err());
    }

    #[test]
    fn an_unknown_key_asks_for_fresh_keys() {
        let token = sign(Some("rotated"), &good_claims());
        assert!(check_id_token(&token, &jwks("k1"), &EXPECTED).is_err());
        // Without a key id, the only key of the set is the one.
        assert!(
            check_id_token(&sign(None, &good_claims()), &jwks("k1"), &EXPECTED)
                .unwrap()
                .is_ok()
        );
    }
}
