"""The operator's own webhook TLS: a certificate for the Service generated at start, and the
ValidatingWebhookConfiguration pointed at the Service with the CA bundle (kopf manages it)."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from cryptography import x509

from kaito_operator.webhook_tls import generate_certificate, service_dns_names
from tests.component.test_workspace_controller import free_port, wait_for
from tests.factories import inference_workspace, with_changes


def test_generated_certificate_is_for_the_service_and_signed_by_the_ca(tmp_path):
    names = service_dns_names("kaito-webhook", "kaito-workspace")
    cert_path, key_path, ca_pem = generate_certificate(names, tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kaito-webhook.kaito-workspace.svc" in sans.get_values_for_type(x509.DNSName)
    cert.verify_directly_issued_by(ca)
    assert oct(key_path.stat().st_mode)[-3:] == "600"


def test_operator_serves_the_webhook_with_its_own_certificate(kube_api, namespace, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": kube_api.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "u"}}],
    }))
    port = free_port()
    config_name = f"kaito-{namespace}"
    command = Path(sys.executable).parent / "kaito-operator"
    proc = subprocess.Popen(
        [str(command), "-n", namespace, "--liveness", "", "--metrics-port", "0",
         f"--webhook-port={port}", "--webhook-service=kaito-webhook",
         f"--webhook-namespace={namespace}", f"--webhook-config={config_name}"],
        env=dict(os.environ, KUBECONFIG=str(kubeconfig)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        path = f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{config_name}"
        with httpx.Client(base_url=kube_api.url, timeout=10) as http:
            def configured():
                response = http.get(path)
                # kopf creates the configuration, then fills in its webhooks
                return response.json() if response.status_code == 200 and response.json().get(
                    "webhooks") else None

            config = wait_for(configured, what="the webhook configuration")
        (hook,) = config["webhooks"]
        client = hook["clientConfig"]
        assert client["service"]["name"] == "kaito-webhook"
        assert client["service"]["namespace"] == namespace
        assert client["service"]["path"].endswith("validate-workspace")
        assert "url" not in client
        ca = base64.b64decode(client["caBundle"])
        context = ssl.create_default_context(cadata=ca.decode())
        context.check_hostname = False  # reached on loopback here, by the Service in a cluster
        bad = with_changes(inference_workspace(name="big"),
                           {"inference.preset.name": "phi-3-medium-4k-instruct"})
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u", "operation": "CREATE", "object": bad, "namespace": namespace,
            "kind": {"group": "kaito.sh", "version": "v1alpha1", "kind": "Workspace"},
            "resource": {"group": "kaito.sh", "version": "v1alpha1", "resource": "workspaces"},
            "userInfo": {"username": "test"}}}
        def post():
            try:
                return httpx.post(f"https://127.0.0.1:{port}{client['service']['path']}",
                                  json=review, verify=context, timeout=10).json()["response"]
            except httpx.TransportError:
                return None

        answer = wait_for(post, what="the webhook to answer over TLS")
        assert answer["allowed"] is False, (answer, client)
        assert "needs 28 GiB of GPU memory in total" in answer["status"]["message"]
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "Traceback" not in output, output
