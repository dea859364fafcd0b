"""Fuzz reproducer: seed 2518 (64-bit), minimized from 8 case(s) to 1.

Found by pvtranslate.fuzz: diverge (console, blame: translation).
exit status native 1, pv 4; pv error: the guest executed hlt with interrupts disabled at rip 0x20d65d: nothing can wake it (QEMU would hang here); fullvirt agrees with native
--- native
+++ pv
@@ -1,3 +1 @@
 guestgen 64-bit seed 0x9d6, 1 cases
-c00 f=292 sp=0 h=bc514c45 k=93b10d9f x=1
-PASS

The guest ELF is embedded below (zlib, base64), so this file needs only pvtranslate and the VMM;
PROGRAM is the fuzz program that generated it (pvtranslate.fuzzgen.FuzzProgram.from_json(PROGRAM)
.build() rebuilds it while the generator is unchanged). Run ``python seed_2518.py``: it exits with status 1
while the translation still differs from the original, 0 once it is fixed.

    # fuzz program: seed 2518, 64-bit, 1 case(s)
    c00 hlt [IF=1, the timer IRQ0 ends it] plain: hlt
      @SITE: hlt
      @POST:
          !in al, 0x80
"""
from __future__ import annotations

import base64
import sys
import tempfile
import zlib
from pathlib import Path

SEED = 2518
BITS = 64
VERDICT = 'diverge'
ASPECT = 'console'
BLAME = 'translation'
XFAIL_REASON = None   # set when kept as a known bug: the file and the fix it needs
PROGRAM = {'bits': 64,
 'cases': [{'context': 'plain',
            'draw_seed': 1722598873,
            'entry': 'hlt',
            'pieces': [{'after': ['!in al, 0x80'],
                        'before': [],
                        'functions': [],
                        'kind': 'filler',
                        'tags': ['filler-site']}],
            'variant': 0}],
 'seed': 2518}
GUEST_ELF = zlib.decompress(base64.b64decode(
    "eNrtnAl0FFW6x28Wkk40pDHIvjQQMSCGdDYhbBXZGkQIqwgKFUMnJECISQfBGQ8FyNOQgIIgOAoWnhl0fCJxYJQYaAsiuIK4"
    "DObooIUy2EUeDJsOEKXfra5/QXKPOu+8857j6Pc/p+v3ff+633erqm+nu9NJLx4+ZkR4WBizFc4GMzNzMWcol+DPbrwyhHv9"
    "WCTfOlh0aGyUaTqv7GxO5/fTrGvBQhN974D2MawZm9aF5kux61zNqbHmRF0kbj80XztkNiMZiUQikUgkEolEIpFIJBKJRCKR"
    "SCQSiUQikUj/PjI/53bw23X8NtVbfOVzf1u7tKddLD7sepbO4dKXvemK767vND9Gj+9eX6MwpsWnxpmfysenxLu0OF6hxHfX"
    "TrAwJ2/77s9fO83TXVW/SlulrwqsOuR543XzhGtd5umGdeSnVJskuZinIoKffG2KFVa3Ou7iN7XadbxbddLxzdWRnOGcYZxh"
    "nEHO4PHNOyXeO57V75RDPFTj49dpp3m13R/Ep/gHZrtY4B1uYdKd5vWuyQt3ssAn3K2+fLybZ+c/Hqlef2zE0DWemvx9T56J"
    "f7TkOc+rTzxTWpDQ9/5MT+2hk+8Pb3Nk2dee3ScWjEm9Pvflkx7/lKz2VbPSV8/2vPbbZyoyN7do12LUzscvjX6lsXrgyFE1"
    "8vl59x7aprYe9eqMDkUla+c8P25U7Vdy+f6d7431jdpVN3tYXOuRi18atfvP7OKeo4l/rxvlf3/gqM+ze7ryRr029/FJcefH"
    "fBrVmFO9OJLtWLNp6vljSs74CRMnT7kjOyd7fPaE7InZk7InZ0/JvuMpz8pZiYcC/qunF1jM41oXv4SVEYGv+KkGuppnya9V"
    "oCUPAjLf+DPNa/IK31nNjp9vuDxhYi0bxgsSHh6W4AjurUgYGOtzLLnEIhgrbRHgWzZ9Wh0/gin+0LCWb4T+NGTZfserF/jO"
    "b88Vz5h259S6iVM8FXUVB4MHK87sORruqaj3fBhYpsfHv6wo/GgC64PB4PJvyvUZ062RfnNJLLsc5mtTcSb4VtOK8sjgwYa/"
    "VZzhxozpDc95lmuLDnj+UZ9TfXNgAm8yteG1KSuiHtR8sYGhPPUE9zecnlGX429lntQX5oDAk3xbV8v4tBURtY7Qcrompzov"
    "kGDurQk3r8pYc0h1bICZrKrPX3bB6YvGMq3SmqZald401asCTdNA1aGm6aGi8I111pRvmBeOIamM4Kfhi8GdFNT9vcyjTeeT"
    "Vw8x74KqNyuGJTqqDvGts6qeb9tVaXzrqtL5NqkqwLcpnpW+RIdnpb86tLQb2I8fda3TXANR+RURlSMc+RVDwytHODkiK0e0"
    "44iqHOHicFSOSOKI9axckFIrhS5UWq0nxAGe5R/4Rk3wdzYPtPIyv9CVrRM9leHW5Yvnht9l7iq5sutWR6C7aSea9p08msY9"
    "Z6AljxqYn5nuUB5b81R25Ovz3Hd8eKS5o7e5w4MrdXNoIUealnkfVnac8+nCJXUsx8X8Vm2mW6sx/0SJz3vQ02PSOxfmaF3D"
    "Dnn2nHCFguCeZRfjF3zhN6+A+634V1qPvWJHlZ7O8ceYM+78zlwL5o+JwK08DLTlUY4/zty18equG3lY59b8zONiNeYP4MB0"
    "bvtZiZ2OCaUehnRQKE3hezeY5cl8g9NKq9U2cfb/rDS2lqmhaEELv3mmNWba60zAPKO65W/5+EOmjXVCwf3BtxpO1v3Agz+4"
    "I9GcJPQjgK+fyMTQ8nGElo8ztHzahZaPK7R8kjwVxz2VuxLrQyVrE81VFKjhp2dM45siVsQa1vNtWMNqvg1vqOTbiIblfBtp"
    "/DYYGtDCKLOCKKPICqKNXDNwGNOsPMYYbwaxxmgT1xjm47PoWmOgiTgjw0RLI9kaG2/cYAVOo5MZtDKut/LrjGutIMGIsILW"
    "xiW+FoquN85dDuVtjBNW0NY4agXtjHoraG+8ZwUdjP1W0NHYbQWdjB1m0NnYaqKLscWyuxobraCbsdYKuhuVVtDDWGoFicYi"
    "K7jBKLGCnkaBFdxozLCCJGOyFfQyxlhBb2OoFdxkZFlBH8NtBTcbSVaQbHS1gr5GGytwG3FWkGpEWkGa0WjdQ+nGWSvIMAwr"
    "yDR0K7jF+NgK+hkHraC/sc8KsoxdVjDA2G4FA43nrWCQsdkKBhsbrGCI8QgPcibyJ11X6FkkGDF9que9H336+Z+tvQMpV350"
    "BW5t5Mvuy0v8oUUvDUkkEon0C1a000UXgUQikUgkEolEIpFIpF/6+38Xvf8nkUgkEolEIpFIJBLpl66HrtAFSqAMKqAKaqBu"
    "14ehHpRAGVRAFdRAHWThqAclUAYVUAU1UAdZBOpBCZRBBVRBDdRB66v+eD0ogTKogCqogTpofY0hrwclUAYVUAU1UAetrzPk"
    "9aAEyqACqqAG6iCLRj0ogTKogCqogToY+vcPsx6UQBlUQBXUQB1kMagHJVAGFVAFNVAHWSzqQQmUQQVUQQ3UQXYN6kEJlEEF"
    "VEEN1EF2LepBCZRBBVRBDdRBFod6UAJlUAFVUAN1kLVEPSiBMqiAKqiBOsjiUQ9KoAwqoApqoA5a//DD60EJlEEFVEEN1EHW"
    "CvWgBMqgAqqgBupg6F+PzHpQAmVQAVVQA3WQJaAelEAZVEAV1EAdZK1RD0qgDCqgCmqgDrLrUQ9KoAwqoApqoA6yNqgHJVAG"
    "FVAFNVAHWVvUgxIogwqoghqog9ZXnvJ6UAJlUAFVUAN1kLVHPSiBMqiAKqiBOsg6oB6UQBlUQBXUQB1kHVEPSqAMKqAKaqAO"
    "sk6oByVQBhVQBTVQB1ln1IMSKIMKqIIaqIOsC+pBCZRBBVRBDdRB1hX1oATKoAKqoAbqoPXEz+tBCZRBBVRBDdRB1g31oATK"
    "oAKqoAbqIOuOelACZVABVVADdZD1QD0ogTKogCqogTrIElEPSqAMKqAKaqAOshtQD0qgDCqgCmqgDrKeqAclUAYVUAU1UAfZ"
    "jagHJVAGFVAFNVAHWRLqQQmUQQVUQQ3UQdYL9aAEyqACqqAG6iDrjXpQAmVQAVVQA3WQ3YR6UAJlUAFVUAN1kPVBPSiBMqiA"
    "KqiBOshuRj0ogTKogCqogTrIklEPSqAMKqAKaqAOsr6oByVQBhVQBTVQB61v0ub1oATKoAKqoAbqIHOjHpRAGVRAFdRAHWSp"
    "qAclUAYVUAU1UAdZGupBCZRBBVRBDdRBlo56UAJlUAFVUAN1kGWgHpRAGVRAFdRAHWSZqAclUAYVUAU1UAfZLagHJVAGFVAF"
    "NVAHWT/UgxIogwqoghqog6w/6kEJlEEFVEEN1EGWhXpQAmVQAVVQA3WQDUA9KIEyqIAqqIE6yAaiHpRAGVRAFdRAHWSDUA9K"
    "oAwqoApqoA6ywagHJVAGFVAFNVAH2RDUgxIogwqoghqoD2n6e4BgkG+e3GbxsfcsNoLn7Hxb85yPK+CPP1fF1T4F/PHWNOdv"
    "MlJdS6/m7WL428YqZ5N5pavzJdh9f/rfg/xaz7/Z+fLz/1Wq2vX/PMHsn+3865n5P+HNcnfTPBjB+jXNFws5iUT699XmKP58"
    "tOrq89GzQr5VyLcLeY2Q7xXyd4T8IyE/IuTHhPykkJ8X8kYhD49unscIuVPI2wt5dyHvJeSpQj5AyIcJ+W1CPknI7xbyfCGf"
    "L+QLhXyJkK8Q8tVCvkHItzma55uF/c8L+XYh3yXk+4T8oJB/LOS6kBtCflbIG4U8Ujj+OCFvI+RdhbyF+Xrs1NU8SdjvFvIs"
    "IR8q5GOEfLKQzxDyAiEvEfJFQr5UyCuFfK2QbxTyLUJOIpFI/yqluFPT0jMyb+nXP/eevFne/J96flf+IOYqK+Gb2fw2h98W"
    "8lupaQ4yP9JweTkKzf2Txw6fmjN86KThw2JZTvbEibGsoNxb5ivwFrsy02++p9DnKvN6Z7lSFvafldnH5Xbl5ZZ5y2LpHiaR"
    "SCTSz1FF0XP2nCx6Yv13HvXYIseTD5e37z7q2t95Pnrs6Nf/tWTuq43sRMyXoy9Fq1nFfbJ+k/61Y9yBFf7IoH/jM/2fH9D5"
    "7ladW6oT77p//Z8+/2pLVObxWXeVfrh7Xdwn6z7ZsMwo/Xp0Sm1CWcsX7rrw8Y62pf0Op61NOd/vobX3Fa2+fZhzXHJ9ev4D"
    "XcYe2p1aPei5TmfOPv1u2KXvvEXSBKPm2RfTCnos2dtw9G1H3qThJzPXPVhzJrhxa3R+fvYD1cu+mdvr84duevzDA9UjTz32"
    "WWxS1NmU33dZPPSjCZ8lNGwb/kLLDUkzxkS/flBaV+9yq0+dHPKnvsHOJcFpR55obL/p7KA+hyq+WHrn7rZdDhzu3WHG0Wdp"
    "BZBIJBLp16jgv0h05UkkEolEIpFIJBKJRCKRSCQSiUQikUgkEolE+r9Tm9X3Guey+xV8vvaUZ9jWa3oevjDi2PS9Je8/VqRm"
    "Ve55MV2tY/kLB4+c/GbJvvHODbP21rmqDzpuC1c27OixYvcfRi7sn/DG/EfTtxy4/Zbc08Ev7+20ssvSh6Xvnjp178J1L/V9"
    "Ybn3rv9ooSzyb2xIc8ZMmv+7lreFvXL/meP9XTM6HHFf8q480DFtzxBp+abbtbf/uK/t+HznyksjtddXzX+pKDrrvosvHM4r"
    "/MPTp7J3lI+79cjowN+vG3dk2fjGr+pefqT3drWb84nsyncvVTY8wCY1rsm74SE5ZufIPiv7PB7VvcN/lv9lRUqk1Ofi0I+3"
    "HHN1HPxtwZTAo/Wfrh7zSfieJd3W/Pmvnc/502Oin1Ezt9IKIJFIJBKJRCKRSCQSiUQikUgkEolEIpFIJBKJRCKRSCQSiUQi"
    "kUgk0k+hyIyO7oy5KdW1mxJX6nOrHXeWLFjzdt/Dha+tW/FO6X5txfyLRx11H3yUuDvr255hu3MXfLnh5P5OJRNKpWe7a6ed"
    "qSV0BUkkEolEIpFIJBKJRCKRSCQSiUQikUgkEolE+uUqjN+uYxHMxZyhfBB8B3wWZvmbwiw/Hv6mcMu/AePbwK+D3w1+F/jH"
    "4PeGfyP8lhGWnww/Bf5A+AnwB8IfJ/hD4d8D/zr4t8P3we8Bfxr89fAd8L3wn4Y/Dv48+Kfgx8FfBL8Rfk/4S+F3i7T8dPhV"
    "8CfDt7+QcB388BaWvwv+Jvh++HPh/xF+7yjLbw3/RfiD4efBfxn+ZvhR8P3wnxX8/fC3Cv5B+NsF/zD8Gvgx8D+Dv1fwj8N/"
    "R/BPwf9I8L+BfwR+NPzL9roSxkeFWf5JYXw8/POC3w5+o+B3gx8e3dzvDT9G8NPgO6ObH89A+O0Ffzj87kKfsfB7CePvgJ8q"
    "+DL8AYJfCH+Y0L8U/m3C+N/AnyT4D8K/W/BXws8X/Mfhzxf8p+EvFPzn4C8R/JfgrxCO/1X4qwW/Dv4Goc+78DcL/l/gPy/4"
    "n8HfLvhfwd8l+Kfh7xP8i/APCn54uOV/LPjXwNcFvzV8Q/A7wz8r+D3hNwp+X/iRjuZ+P/hxgp8Nv43gj4bfVfAnwk8S/Lvg"
    "uwXfCz9L8IvhDxX8++CPEXwF/mTBr4A/Q/DXwC8Q/Cfhlwj+7+EvEvyt8JcK/svwKwX/NfhrBf9N+BsF/334WwT/E/jb4LeC"
    "fxS+Bn84/BPwW8Q0f968AL8d/DD7BcHMMl9uqY+NmDkvt7CYo6Tcl8eRP7e8bLaVzvYutILi8nlWUFZYUOydhdhEaWGxb6Y5"
    "Ki+3zDvzHm9BqFUo8RabA0u9ZV5zkuL5Zlg+z2t5VpCXW+IrLzWj/MLiwtC0swoLvGVmQd5sb96cstDEeXPMEbnlc02/sKx0"
    "ZgroBlPBNDAdzAAzwVvAfmB/u8+VhnZHt93Sbfd0203ddle33dZt93Xbjd1251S7c+qVY7U7p9qdU+3OqXbnVLtzqt051e6c"
    "andOszun2Z3T7IZpdsM0u2Ga3TDNbphmN0yzG6bbDdPthun2oaZfubB253S7c7rdOd3unG43zLAbZtgNM+yGGXbDjCt3ld0w"
    "w26YYTfMsA81w+6caXfOtDtn2p0zQ51L7zVHlJd5SzPTEfBVx9eauToLcn3emXztF/CFyZLnzr9vVq4vlyUXz/d5k0sWzGbJ"
    "Pu9CH0u23LJF83y593D6Si3ORvS/ef0t5uYtwjYk0Cnw+1MWi+fEcHGEC693hPGRQt4a89uv7+z3BS7UX3T8+PwdxOO3J05B"
    "qv14vavZsTfRaQtJmD8K89iHY59XUrO5ryrpAuoifvz6p/xAfXKjxax/cv/9N+XGar4="))


def check(workdir: Path) -> str | None:
    """None if the translation behaves as the original; else what differs."""
    from pvtranslate.fuzz import check_reproducer
    return check_reproducer(GUEST_ELF, PROGRAM_SITES, Path(workdir))


PROGRAM_SITES = {"0x100025": "lgdt", "0x10002c": "mov.from.cr4", "0x100032": "mov.to.cr4", "0x10003a": "mov.to.cr3", "0x100042": "rdmsr", "0x100049": "wrmsr", "0x10004b": "mov.from.cr0", "0x100053": "mov.to.cr0", "0x100105": "mov.to.ds", "0x100107": "mov.to.es", "0x100109": "mov.to.fs", "0x10010b": "mov.to.gs", "0x10010d": "mov.to.ss", "0x10011b": "lidt", "0x10011e": "mov.from.cr0", "0x100129": "mov.from.cr4", "0x100136": "out8.imm8", "0x10013a": "out8.imm8", "0x10013e": "out8.imm8", "0x100142": "out8.imm8", "0x100146": "out8.imm8", "0x10014a": "out8.imm8", "0x10014e": "out8.imm8", "0x100152": "out8.imm8", "0x100156": "out8.imm8", "0x10015a": "out8.imm8", "0x100161": "ltr", "0x100169": "lldt", "0x100178": "wrmsr", "0x10019c": "out8.imm8", "0x100234": "sti", "0x10023e": "hlt", "0x10023f": "in8.imm8", "0x100258": "pushfq", "0x100282": "out8.imm8", "0x10029a": "out8.imm8", "0x1002dd": "rep.outsb", "0x10039f": "mov.from.ds", "0x1003ac": "mov.to.ds", "0x1003ae": "mov.from.es", "0x1003bb": "mov.to.es", "0x1003bd": "mov.from.fs", "0x1003ca": "mov.to.fs", "0x1003cc": "mov.from.gs", "0x1003d9": "mov.to.gs", "0x1003db": "mov.from.ss", "0x1003e8": "mov.to.ss", "0x1003ec": "popfq", "0x10041d": "out8.imm8", "0x100421": "mov.from.cs", "0x100427": "mov.from.ss", "0x10042d": "mov.from.ds", "0x100433": "mov.from.es", "0x100439": "mov.from.fs", "0x10043f": "mov.from.gs", "0x100455": "mov.from.ds", "0x100462": "mov.to.ds", "0x100464": "mov.from.es", "0x100471": "mov.to.es", "0x100661": "mov.from.cs", "0x100666": "mov.from.ss", "0x10066c": "mov.from.ds", "0x100672": "mov.from.es", "0x100678": "mov.from.fs", "0x10067e": "mov.from.gs", "0x1008b3": "out8.imm8", "0x1008be": "iretq", "0x1008d7": "pushfq", "0x1008dd": "mov.from.cs", "0x1008e2": "mov.from.ss", "0x1008e8": "mov.from.ds", "0x1008ee": "mov.from.es", "0x1008f4": "mov.from.fs", "0x1008fa": "mov.from.gs"}   # every sensitive instruction the generator placed: va -> catalog entry


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        problem = check(Path(tmp))
    print(problem or "equivalent: the translation now behaves as the original")
    sys.exit(1 if problem else 0)
