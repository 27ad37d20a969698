from appjail.helper.engine.state import READY, JailRecord, StateStore
from appjail.model import JailSpec


def test_round_trip_and_torn_files(tmp_path):
    store = StateStore(tmp_path)
    record = JailRecord(JailSpec("web", "wg0", ("192.0.2.53",), True), 1000, 7, READY)
    store.save(record)
    (store.jails_dir / "evil.json").write_text('{"spec": {"name": "../x"}}')
    (store.jails_dir / "torn.json").write_text('{"spe')
    records, bad = store.load_all()
    assert records == [record]
    assert sorted(p.name for p in bad) == ["evil.json", "torn.json"]
    store.delete(record.kernel_name)
    assert store.load_all()[0] == []
