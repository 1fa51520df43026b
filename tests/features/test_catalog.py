import shutil

import pytest
import yaml

from features.catalog import DEFAULT_CATALOG_DIR, CatalogError, load_catalog


def test_default_catalog_is_realistic():
    catalog = load_catalog()
    kinds = {offer.kind for offer in catalog.offers.values()}
    assert kinds == {"discount", "bonus_points", "free_delivery", "cross_sell"}
    formats = {store.format for store in catalog.stores.values()}
    assert formats == {"hypermarket", "supermarket", "convenience"}
    assert any(o.sales_channels == ["app"] for o in catalog.offers.values())
    assert any(o.requires_coffee_corner for o in catalog.offers.values())
    assert set(catalog.channels) == {"email", "push", "sms", "messenger"}
    assert all(catalog.products_in(c) for c in catalog.categories)


@pytest.fixture
def catalog_dir(tmp_path):
    target = tmp_path / "catalog"
    shutil.copytree(DEFAULT_CATALOG_DIR, target)
    return target


def edit(path, index, **changes):
    entries = yaml.safe_load(path.read_text())
    entries[index].update(changes)
    path.write_text(yaml.safe_dump(entries))
    return entries[index]["id"]


@pytest.mark.parametrize(
    ("file", "changes", "field", "problem"),
    [
        ("offers.yaml", {"value": "ten"}, "value", "Expected `float`, got `str`"),
        ("offers.yaml", {"kind": "lottery"}, "kind", "Invalid enum value 'lottery'"),
        ("offers.yaml", {"category": "spaceships"}, "category", "unknown category"),
        ("offers.yaml", {"valid_to": "2020-01-01T00:00:00+00:00"}, "valid_to", "after"),
        ("stores.yaml", {"format": "kiosk"}, "format", "Invalid enum value 'kiosk'"),
        ("stores.yaml", {"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ("stores.yaml", {"opening_hours": {"mon": "8-20"}}, "opening_hours", "HH:MM-HH:MM"),
        ("products.yaml", {"price": -1}, "price", "> 0"),
    ],
)
def test_catalog_errors_name_file_entry_and_field(catalog_dir, file, changes, field, problem):
    entry_id = edit(catalog_dir / file, 3, **changes)
    with pytest.raises(CatalogError) as error:
        load_catalog(catalog_dir)
    text = str(error.value)
    assert file in text and f"'{entry_id}'" in text and f"'{field}" in text and problem in text


def test_duplicate_and_missing_files_are_reported(catalog_dir):
    entries = yaml.safe_load((catalog_dir / "offers.yaml").read_text())
    (catalog_dir / "offers.yaml").write_text(yaml.safe_dump([*entries, entries[0]]))
    with pytest.raises(CatalogError, match="duplicate id"):
        load_catalog(catalog_dir)
    (catalog_dir / "offers.yaml").write_text(yaml.safe_dump(entries))
    (catalog_dir / "channels.yaml").unlink()
    with pytest.raises(CatalogError, match=r"channels\.yaml: catalog file is missing"):
        load_catalog(catalog_dir)
