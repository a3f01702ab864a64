from shipping.parcel import Parcel


def test_light_domestic_parcel_costs_the_base_price():
    assert Parcel(weight_g=800, zone="domestic").price_cents() == 450


def test_heavy_parcels_pay_per_half_kilo():
    assert Parcel(weight_g=2000, zone="eu").price_cents() == 900 + 2 * 120
