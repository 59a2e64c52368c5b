"""The S3 client: how it addresses buckets, how it follows a bucket to its region, what it never shows."""
from __future__ import annotations

from sciops.storage.s3 import Credentials, S3Client

CREDS = Credentials("AKIDEXAMPLE", "secret")


def test_credentials_never_shown():
    creds = Credentials("AKIAVISIBLE", "top-secret")
    assert "top-secret" not in repr(creds) and "AKIAVISIBLE" not in repr(creds)


def test_a_dotted_bucket_is_addressed_path_style_on_aws():
    """``lab.images`` as a virtual host (lab.images.s3.amazonaws.com) fails TLS: S3's wildcard certificate
    covers one label. Such a bucket is addressed path-style (objects and multipart), others as virtual hosts."""
    dotted, plain = S3Client("lab.images.v2", CREDS, "eu-west-1"), S3Client("lab-images", CREDS, "eu-west-1")
    assert dotted.store.config["virtual_hosted_style_request"] == "false"
    assert plain.store.config["virtual_hosted_style_request"] == "true"
    url = dotted.boto.generate_presigned_url("upload_part", Params={"Bucket": "lab.images.v2", "Key": "in/a.tif",
                                                                    "UploadId": "u", "PartNumber": 1})
    assert url.startswith("https://s3.eu-west-1.amazonaws.com/lab.images.v2/in/a.tif?")


def test_a_bucket_in_another_region_is_found_there_and_asked_again():
    """S3 answers a request sent to the wrong region with 301 PermanentRedirect; the client asks S3 where
    the bucket is (botocore's redirector follows the 301 and reads ``x-amz-bucket-region``), remakes its
    store for that region and makes the call again. No S3 is reachable from here and moto keeps no
    regions, so S3's answers are given at botocore's ``before-send`` hook and as the object store's error."""
    from botocore.awsrequest import AWSResponse

    class Raw:
        def stream(self, **_):
            yield b""

    sent = []

    def answer(request, **_):   # HEAD bucket: first the wrong region, then the right one
        sent.append(request.url)
        status = 301 if len(sent) == 1 else 200
        return AWSResponse(request.url, status, {"x-amz-bucket-region": "eu-west-1"}, Raw())

    client = S3Client("lab-images", CREDS, "us-east-1")
    client.boto.meta.events.register("before-send.s3", answer)
    regions = []

    def listing(store):
        regions.append(store.config["region"])
        if store.config["region"] != "eu-west-1":
            raise RuntimeError("Generic S3 error: Error performing list request: Server returned non-2xx status "
                               "code: 301 Moved Permanently: <Error><Code>PermanentRedirect</Code><Message>use "
                               "the eu-west-1 endpoint</Message></Error>")
        return "listed"

    assert client.call("list s3://lab-images/", listing) == "listed"
    assert regions == ["us-east-1", "eu-west-1"] and client.region == "eu-west-1"
    assert len(sent) == 2 and "eu-west-1" in sent[1], sent


def test_access_denied_names_the_permission_the_call_needed():
    from sciops.storage.s3 import S3RequestError

    for what, need in (("PUT s3://b/k", "s3:PutObject"), ("upload part 2 of k", "s3:PutObject"),
                       ("list s3://b/p/", "s3:ListBucket"), ("list parts of k", "s3:ListMultipartUploadParts"),
                       ("GET s3://b/k", "s3:GetObject"), ("DELETE s3://b/k", "s3:DeleteObject"),
                       ("read the tags of s3://b/k", "s3:GetObjectTagging")):
        assert f"these credentials lack {need} there" in str(S3RequestError(403, "AccessDenied", "Access Denied", what))
    assert "lack" not in str(S3RequestError(403, "SignatureDoesNotMatch", "", "PUT s3://b/k"))
