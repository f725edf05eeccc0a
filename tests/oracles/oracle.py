"""Independent implementations of the other side of each signature scheme.

Reads one JSON request on stdin, writes one JSON answer on stdout. Switchboard's tests use
it so that signatures are produced and checked by the providers' own libraries, not only
by Switchboard's code.
"""
import base64
import datetime
import hashlib
import hmac
import json
import sys

req = json.load(sys.stdin)
op = req["op"]
out = {}

if op == "standard-sign":
    from standardwebhooks.webhooks import Webhook
    ts = datetime.datetime.fromtimestamp(req["timestamp"], tz=datetime.timezone.utc)
    out["signature"] = Webhook(req["secret"]).sign(req["id"], ts, req["body"])
elif op == "standard-verify":
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
    try:
        Webhook(req["secret"]).verify(req["body"], req["headers"])
        out["ok"] = True
    except WebhookVerificationError as e:
        out["ok"] = False
        out["error"] = str(e)
elif op == "twilio-sign":
    from twilio.request_validator import RequestValidator
    out["signature"] = RequestValidator(req["token"]).compute_signature(req["url"], req["params"])
elif op == "plivo-sign":
    from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3
    params = dict(req["params"])
    if req["method"] == "GET":
        base = construct_get_url(req["url"], params).decode("utf-8")
    else:
        base = construct_post_url(req["url"], params).decode("utf-8")
    sig = get_signature_v3(req["token"].encode("utf-8"), base, req["nonce"].encode("utf-8"))
    out["signature"] = sig.decode("utf-8")
elif op == "telnyx-keygen":
    from nacl.signing import SigningKey
    key = SigningKey.generate()
    out["seed"] = base64.b64encode(bytes(key)).decode()
    out["public_key"] = base64.b64encode(bytes(key.verify_key)).decode()
elif op == "telnyx-sign":
    from nacl.signing import SigningKey
    key = SigningKey(base64.b64decode(req["seed"]))
    message = (str(req["timestamp"]) + "|" + req["body"]).encode("utf-8")
    out["signature"] = base64.b64encode(key.sign(message).signature).decode()
elif op == "vonage-sign":
    # A Vonage signed webhook: an HS256 JWT under the signature secret, carrying the
    # SHA-256 of the body as Vonage documents it.
    import uuid
    import jwt
    claims = {
        "iat": req["iat"],
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(req["body"].encode("utf-8")).hexdigest(),
        "api_key": "abcd1234",
        "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    }
    out["token"] = jwt.encode(claims, req["secret"], algorithm="HS256")
elif op == "hmac":
    digest = hmac.new(req["key"].encode(), req["message"].encode(), getattr(hashlib, req["algorithm"])).digest()
    out["signature"] = digest.hex() if req["encoding"] == "hex" else base64.b64encode(digest).decode()
elif op == "prometheus-parse":
    from prometheus_client.parser import text_string_to_metric_families
    out["samples"] = [
        {"name": s.name, "labels": s.labels, "value": s.value}
        for family in text_string_to_metric_families(req["text"])
        for s in family.samples
    ]
else:
    raise SystemExit("unknown op " + op)

json.dump(out, sys.stdout)
