"""`vad-edge doctor` against a real broker and real (good and bad) cameras."""

import yaml

from mqtt_helpers import Broker
from vad_edge.cli import main
from vad_edge.demo import SAMPLE


def rows(printed: str) -> dict[str, str]:
    """{check name: 'status detail'} from the doctor's aligned table."""
    table = {}
    for line in printed.splitlines()[:-1]:  # the last line is the verdict
        name, rest = line.split("  ", 1)
        table[name.strip()] = rest.strip()
    return table


def test_doctor_reports_each_part_and_fails_on_a_dead_camera_or_broker(tmp_path, tiny_checkpoint, capsys):
    broker = Broker(tmp_path / "broker").start()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "device_id": "box", "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu"},
        "cameras": [{"name": "door", "source": str(SAMPLE)}]}))
    try:
        assert main(["doctor", "--config", str(cfg)]) == 0
        printed = capsys.readouterr().out
        table = rows(printed)
        assert printed.splitlines()[-1] == "ready"
        assert table["kernels on cpu"].startswith("ok") and "match the reference" in table["kernels on cpu"]
        assert table["camera door"].startswith("ok") and "a frame" in table["camera door"]
        assert table["broker"].startswith("ok") and f"127.0.0.1:{broker.port}" in table["broker"]
        assert table["model door"].startswith("warn") and "not calibrated" in table["model door"]
        assert table["disk"].startswith("ok") and {"build", "clock"} <= table.keys()

        broken = yaml.safe_load(cfg.read_text())
        broken["cameras"].append({"name": "yard", "source": str(tmp_path / "gone.mp4")})
        cfg.write_text(yaml.safe_dump(broken))
        broker.stop()
        assert main(["doctor", "--config", str(cfg)]) == 1
        printed = capsys.readouterr().out
        table = rows(printed)
        assert table["camera yard"].startswith("FAIL") and "gone.mp4 does not exist" in table["camera yard"]
        assert "threads" in table
        assert table["camera door"].startswith("ok")  # one dead camera does not hide the good one
        assert table["broker"].startswith("FAIL") and "unreachable" in table["broker"]
        assert printed.splitlines()[-1].startswith("NOT ready")
    finally:
        broker.stop()


def test_doctor_without_a_config_still_checks_the_box(tmp_path, monkeypatch, capsys):
    from vad_edge import doctor

    monkeypatch.setattr(doctor, "DEFAULT_CONFIG", tmp_path / "absent.yaml")
    main(["doctor"])
    table = rows(capsys.readouterr().out)
    assert table["build"].startswith("ok") and table["kernels on cpu"].startswith("ok")
    assert table["config"].startswith("warn") and "absent.yaml does not exist" in table["config"]
    assert "disk" in table and "clock" in table and not any(name.startswith("camera") for name in table)
