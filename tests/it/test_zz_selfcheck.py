import os, time
def setup_module():
    print("setup")
def test_a_pass():
    assert True
def test_b_fail():
    assert 1 == 2, "one is not two"
def test_c_hang():
    time.sleep(100)
def test_d_after_hang():
    pass
def test_e_crash():
    os._exit(3)
def test_f_after_crash():
    pass
