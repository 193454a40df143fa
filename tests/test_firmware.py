"""firmware_config: the shipped config, units, scripts, installer, and the box broker's bridge."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from mqtt_helpers import Broker, Subscriber, wait_for
from vad_edge import config

FW = Path(__file__).resolve().parent.parent / "firmware_config"
INSTALL = FW / "install.sh"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (.ci/missing-packages names its package; .ci/run installs it)")
    return path


def test_default_config_is_valid_and_schema_is_current():
    cfg = config.load(FW / "etc/vad-edge/config.yaml")
    assert cfg.state_dir == Path("/var/lib/vad-edge") and cfg.mqtt.host == "127.0.0.1"
    shipped = json.loads((FW / "etc/vad-edge/config.schema.json").read_text())
    assert shipped == config.schema(), "regenerate it: vad-edge config schema > firmware_config/etc/vad-edge/config.schema.json"


def test_every_option_is_in_the_default_config():
    text = (FW / "etc/vad-edge/config.yaml").read_text()
    models = [config.Config, config.MQTT, config.TLS, config.Model, config.Health, config.Outbox, config.Camera,
              config.HomeAssistant]
    for model in models:
        for name in model.model_fields:
            assert f"{name}:" in text, f"{model.__name__}.{name} is not documented in the default config"


def test_installer_help_lists_every_option():
    done = subprocess.run(["bash", str(INSTALL), "--help"], capture_output=True, text=True, check=True)
    assert "set -" not in done.stdout and done.stdout.startswith("vad-edge installer")
    for option in re.findall(r"^    (--[a-z-]+)\)", INSTALL.read_text(), flags=re.M):
        assert option in done.stdout, option


def test_files_the_docs_name_exist():
    """Every firmware_config/ path the default config and the READMEs mention is in the tree."""
    root = FW.parent
    for doc in (FW / "etc/vad-edge/config.yaml", FW / "README.md", root / "README.md"):
        for path in re.findall(r"firmware_config/[\w./-]*\w", doc.read_text()):
            assert (root / path).exists(), f"{doc.name} names {path}"


def test_firmware_readme_installs_what_it_uses():
    text = (FW / "README.md").read_text()
    step1 = text.split("## 1.", 1)[1].split("## 2.", 1)[0]
    if "mosquitto_sub" in text:
        assert "mosquitto-clients" in step1
    assert "JetPack 5 (Xavier, older Orin images) is not supported" in text


def test_shellcheck():
    result = subprocess.run([need("shellcheck"), str(INSTALL), str(FW / "bin/vad-edge-performance"),
                             str(FW.parent / ".ci/run"), str(FW.parent / ".ci/aarch64/run")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def run_installer(*args, env=None, check=True):
    result = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True,
                            env={**dict(__import__("os").environ), **(env or {})})
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_dry_run_changes_nothing(tmp_path):
    result = run_installer("--dry-run", env={"DESTDIR": str(tmp_path / "root")})
    assert "+ install -m 0640" in result.stdout and "useradd" in result.stdout
    if shutil.which("nvidia-smi") is None:  # a box without a GPU gets the CPU wheel, not gigabytes of CUDA
        assert "--index-url https://download.pytorch.org/whl/cpu torch" in result.stdout
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("os_release,tegra,message", [
    ("ID=centos\nVERSION_ID=7\n", None, "unsupported OS 'centos 7'"),
    ("ID=ubuntu\nVERSION_ID=18.04\n", None, "unsupported OS 'ubuntu 18.04'"),
    ("ID=ubuntu\nVERSION_ID=20.04\n", "# R32 (release), REVISION: 7.1\n", "unsupported JetPack (L4T R32)"),
])
def test_unsupported_platforms_are_refused(tmp_path, os_release, tegra, message):
    (tmp_path / "os-release").write_text(os_release)
    env = {"VAD_EDGE_OS_RELEASE": str(tmp_path / "os-release"), "DESTDIR": str(tmp_path / "root"),
           "VAD_EDGE_TEGRA_RELEASE": str(tmp_path / "tegra")}
    if tegra:
        (tmp_path / "tegra").write_text(tegra)
    result = run_installer("--dry-run", env=env, check=False)
    assert result.returncode == 1 and message in result.stderr


def test_jetpack6_is_recognised(tmp_path):
    (tmp_path / "os-release").write_text("ID=ubuntu\nVERSION_ID=22.04\n")
    (tmp_path / "tegra").write_text("# R36 (release), REVISION: 4.0\n")
    result = run_installer("--dry-run", env={"VAD_EDGE_OS_RELEASE": str(tmp_path / "os-release"),
                                             "VAD_EDGE_TEGRA_RELEASE": str(tmp_path / "tegra"),
                                             "DESTDIR": str(tmp_path / "root")})
    assert "JetPack 6" in result.stdout and "VAD_EDGE_CUDA_ARCHS=87" in result.stdout
    assert "--system-site-packages" in result.stdout  # JetPack's CUDA torch


def base_system(root: Path) -> None:
    """The parts of the host OS that `systemd-analyze verify --root` resolves the units against: systemd's unit
    library (sysinit.target, ...) and /bin/kill (ExecReload). Symlinks to the host's /usr would not do: under
    --root they resolve inside the root again."""
    units = Path(need("systemd-analyze")).resolve().parent.parent / "lib/systemd/system"
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir()
    shutil.copy2(need("kill"), root / "usr/bin/kill")
    (root / "bin").symlink_to("usr/bin")
    (root / "lib").symlink_to("usr/lib")


def installed_release(root: Path, link: str) -> str:
    return (root / "opt/vad-edge" / link).readlink().name


def test_install_into_a_throwaway_root_upgrade_rollback_and_uninstall(tmp_path):
    """Real installs (venv, extension build) into DESTDIR: the build works from its own venv, the units verify
    against that root, an upgrade keeps the old build and --rollback switches back to it."""
    root = tmp_path / "root"
    base_system(root)
    env = {"DESTDIR": str(root), "PYTHON": sys.executable}
    torch_req = f"torch=={__import__('torch').__version__.split('+')[0]}"
    run_installer("--torch", torch_req, "--central", "127.0.0.1:18883", env=env)
    assert not (root / "tmp").exists(), "the kernels were installed under DESTDIR instead of into the wheel"
    assert "address 127.0.0.1:18883" in (root / "etc/mosquitto/vad-edge.d/bridge.conf").read_text()
    # The agent's broker password, generated: readable by root and the service's group only, hashed for mosquitto.
    secret = root / "etc/vad-edge/mqtt-password"
    password = secret.read_text().strip()
    assert len(password) >= 24 and secret.stat().st_mode & 0o777 == 0o640
    hashed = (root / "etc/mosquitto/vad-edge.d/passwd").read_text()
    assert hashed.startswith("vad-edge:$") and password not in hashed
    assert (root / "etc/mosquitto/vad-edge.d/acl").exists()
    vad_edge = root / "opt/vad-edge/venv/bin/vad-edge"
    # On PATH, through the venv link that upgrades and rollbacks move.
    assert os.readlink(root / "usr/local/bin/vad-edge") == "/opt/vad-edge/venv/bin/vad-edge"
    info = json.loads(subprocess.run([str(vad_edge), "info"], capture_output=True, text=True, check=True).stdout)
    # An x86-64 box gets OpenVINO, which `auto` then scores with.
    x86 = os.uname().machine == "x86_64"
    assert info["cpu"] is True and info["scoring_cpu"]["runtime"] == ("openvino" if x86 else "torch")
    check = subprocess.run([str(vad_edge), "config", "check", str(root / "etc/vad-edge/config.yaml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    units = [str(root / "etc/systemd/system" / u) for u in ("vad-edge.service", "vad-edge-performance.service")]
    verify = subprocess.run([need("systemd-analyze"), "verify", f"--root={root}", "--man=no", *units],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert "vad-edge.service" not in verify.stderr  # no warnings about our units either

    # Upgrade: the user's config survives, the first build becomes 'previous', and --rollback returns to it.
    first = installed_release(root, "venv")
    config_file = root / "etc/vad-edge/config.yaml"
    config_file.write_text(config_file.read_text() + "# mine\n")
    again = run_installer("--torch", torch_req, env=env)
    assert "keeping the existing /etc/vad-edge/config.yaml" in again.stdout
    assert secret.read_text().strip() == password  # an upgrade keeps the password the agent and broker share
    assert config_file.read_text().endswith("# mine\n")
    second = installed_release(root, "venv")
    assert second != first and installed_release(root, "previous") == first
    run_installer("--rollback", env=env)
    assert installed_release(root, "venv") == first and installed_release(root, "previous") == second
    subprocess.run([str(vad_edge), "info"], capture_output=True, check=True)

    run_installer("--uninstall", env=env)
    assert not (root / "opt/vad-edge").exists() and not (root / "etc/systemd/system/vad-edge.service").exists()
    assert not os.path.lexists(root / "usr/local/bin/vad-edge")
    assert config_file.exists()  # configuration kept
    assert "nothing to roll back" in run_installer("--rollback", env=env, check=False).stderr


AGENT_PASSWORD = "agent-secret"


def box_broker(tmp_path: Path, central_port: int) -> Broker:
    """mosquitto with the shipped box configuration; only ports, paths and TLS differ (TLS is tested in
    the agent's tests)."""
    box = Broker(tmp_path / "box")
    store = tmp_path / "box" / "store"
    store.mkdir(parents=True)
    conf = (FW / "mosquitto/vad-edge.conf").read_text()
    conf = conf.replace("listener 1883 127.0.0.1", f"listener {box.port} 127.0.0.1")
    conf = conf.replace("persistence true", f"persistence true\npersistence_location {store}/")  # Debian's is in mosquitto.conf
    conf = conf.replace("include_dir /etc/mosquitto/vad-edge.d", f"include_dir {tmp_path / 'box' / 'd'}")
    conf = conf.replace("password_file /etc/mosquitto/vad-edge.d/passwd", f"password_file {tmp_path / 'box' / 'passwd'}")
    conf = conf.replace("acl_file /etc/mosquitto/vad-edge.d/acl", f"acl_file {FW / 'mosquitto' / 'acl'}")
    passwd = tmp_path / "box" / "passwd"
    passwd.write_text(f"vad-edge:{AGENT_PASSWORD}\n")  # hashed in place, as install.sh does
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True)
    bridge = (FW / "mosquitto/bridge.conf").read_text()
    bridge = bridge.replace("address central.example.com:8883", f"address 127.0.0.1:{central_port}")
    bridge = "\n".join(line for line in bridge.splitlines() if not line.startswith(("bridge_capath", "bridge_tls")))
    (tmp_path / "box" / "d").mkdir()
    (tmp_path / "box" / "d" / "bridge.conf").write_text(bridge + "\n")
    extra = "user root\n" if "user root" in box.config.read_text() else ""
    box.config.write_text(extra + conf + "log_dest stderr\n")
    return box


def test_box_broker_bridges_to_central_and_survives_its_outage(tmp_path):
    need("mosquitto")
    # The central side as in production: a persistent broker and a subscriber with a persistent session.
    # Otherwise, after the central broker's restart, the bridge may deliver the queued events before the
    # watcher has subscribed again, and the broker would rightly drop them.
    central = Broker(tmp_path / "central", persistent=True).start()
    box = box_broker(tmp_path, central.port).start()
    watcher = Subscriber(central.port, "vad-edge/#", session="central-watcher")
    agent = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="agent-on-box")
    agent.username_pw_set("vad-edge", AGENT_PASSWORD)
    agent.connect("127.0.0.1", box.port)
    agent.loop_start()
    try:
        # Nobody else on the box may connect: no anonymous client, no wrong password.
        for user in (None, ("vad-edge", "guess")):
            stranger, answers = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"x{user is None}"), []
            stranger.on_connect = lambda c, u, f, reason, p=None: answers.append(reason)
            if user:
                stranger.username_pw_set(*user)
            stranger.connect("127.0.0.1", box.port)
            stranger.loop_start()
            wait_for(lambda: answers, 10, "the broker's answer")
            stranger.loop_stop()
            assert answers[0].is_failure, f"{user} was let in"
        # The agent may not publish commands: this one never reaches the central broker.
        agent.publish("vad-edge/box/cameras/gate/detect/set", "OFF", qos=1).wait_for_publish(5)
        topic = "vad-edge/box/cameras/gate/events"
        wait_for(lambda: agent.publish(topic, json.dumps({"event_id": "e0"}), qos=1).wait_for_publish(5) is None
                 and watcher.on("/events"), 30, "the first event at the central broker")

        central.stop()
        for i in range(1, 4):  # published on the box while the central broker is down
            agent.publish(topic, json.dumps({"event_id": f"e{i}"}), qos=1).wait_for_publish(5)
        time.sleep(3)
        central.start()
        wait_for(lambda: {json.loads(p)["event_id"] for p in watcher.on("/events")} >= {"e0", "e1", "e2", "e3"},
                 60, "the events queued on the box to reach the central broker")

        # Commands flow the other way, from the central side only.
        assert not watcher.on("/detect/set"), "the agent's own command was let through"
        commands = Subscriber(box.port, "vad-edge/+/cameras/+/detect/set", auth=("vad-edge", AGENT_PASSWORD))
        time.sleep(1)
        watcher.client.publish("vad-edge/box/cameras/gate/detect/set", "ON", qos=1)
        wait_for(lambda: commands.on("/detect/set"), 30, "the command to reach the box")
        assert commands.on("/detect/set") == [b"ON"]
        commands.close()
    finally:
        agent.loop_stop()
        agent.disconnect()
        watcher.close()
        box.stop()
        central.stop()


def test_the_readme_names_every_system_package_the_tests_need(tmp_path):
    """A newcomer installs what the README's first screen says, and `make test` must then pass: the list
    there, the check `make test` runs first and what CI installs are one list (.ci/missing-packages)."""
    import re
    import subprocess

    root = FW.parent
    script = (root / ".ci/missing-packages").read_text()
    tools, libraries = script.split("for pair in")[1].split("for package in")
    packages = {pair.split(":")[1] for pair in re.findall(r"\b[\w-]+:[\w-]+\b", tools)}
    packages |= set(libraries.split(";")[0].split())
    readme = (root / "README.md").read_text().split("## Using it")[0]
    (line,) = re.findall(r"apt-get install -y ([\w.\s-]+)`", readme)  # may wrap
    assert set(line.split()) == packages == {"mosquitto", "shellcheck", "systemd", "openssl", "procps", "python3-gi",
                                            "gir1.2-gst-rtsp-server-1.0", "gstreamer1.0-plugins-good",
                                            "gstreamer1.0-plugins-ugly", "gstreamer1.0-plugins-bad"}
    # With no tool on PATH and none at the usual places (a fake root), and no dpkg, every package is named.
    empty = tmp_path / "bin"
    empty.mkdir()
    fake = script.replace("/usr/sbin/", f"{tmp_path}/sbin/").replace("/usr/bin/", f"{tmp_path}/bin/")
    said = subprocess.run(["/bin/sh", "-c", fake], capture_output=True, text=True, env={"PATH": str(empty)})
    assert set(said.stdout.split()) == packages and said.returncode == 0
