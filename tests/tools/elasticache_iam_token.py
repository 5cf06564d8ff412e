#!/usr/bin/env python3
"""Reference vectors for rekey's ElastiCache IAM token (src/upstream/credentials/aws.rs tests).

Run with botocore installed (pip install botocore): it prints the tokens botocore makes, as the
AWS documentation's Python example does, at a fixed time and with fixed credentials."""
import datetime
import botocore.auth
import botocore.session
from botocore.credentials import Credentials
from botocore.model import ServiceId
from botocore.signers import RequestSigner
from urllib.parse import ParseResult, urlencode, urlunparse

botocore.auth.get_current_datetime = lambda *a, **k: datetime.datetime(2024, 1, 2, 3, 4, 5)

def token(user, cache, region, creds, serverless=False):
    session = botocore.session.get_session()
    signer = RequestSigner(ServiceId("elasticache"), region, "elasticache", "v4", creds, session.get_component("event_emitter"))
    q = {"Action": "connect", "User": user}
    if serverless:
        q["ResourceType"] = "ServerlessCache"
    url = urlunparse(ParseResult(scheme="https", netloc=cache, path="/", query=urlencode(q), params="", fragment=""))
    signed = signer.generate_presigned_url({"method": "GET", "url": url, "body": {}, "headers": {}, "context": {}}, operation_name="connect", expires_in=900, region_name=region)
    return signed.removeprefix("https://")

print(token("app-user", "my-cache", "us-east-1", Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")))
print(token("app user+1", "my-serverless-cache", "eu-west-1", Credentials("ASIAEXAMPLE", "secret/key+x", "FwoGZXIvYXdzE//session+token=="), serverless=True))
