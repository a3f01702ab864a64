import attrs


@attrs.define
class Parcel:
    weight_g: int
    zone: str

    def price_cents(self):
        base = {"domestic": 450, "eu": 900,
                "world": 1600}[self.zone]
        return base + max(0, self.weight_g - 1000) // 500 * 120
