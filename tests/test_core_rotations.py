import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_shrec.core.rotations import (
    matrix_to_relion,
    matrix_to_zxz,
    random_rotations,
    relion_to_matrix,
    relion_to_zxz,
    zxz_to_matrix,
    zxz_to_relion,
)

X, Y, Z = np.eye(3)


def test_zxz_rotates_vectors_actively_and_right_handed():
    # phi about z: x → y (counter-clockwise seen from +z)
    np.testing.assert_allclose(zxz_to_matrix([90, 0, 0]) @ X, Y, atol=1e-12)
    # theta about x: y → z
    np.testing.assert_allclose(zxz_to_matrix([0, 90, 0]) @ Y, Z, atol=1e-12)
    # intrinsic z-x'-z'': psi acts first on the vector. psi=90 maps x → y, then theta=90 about x
    # maps y → z: R(0, 90, 90) x = z
    np.testing.assert_allclose(zxz_to_matrix([0, 90, 90]) @ X, Z, atol=1e-12)
    # and phi acts last: R(90, 90, 0) y = Rz(90) Rx(90) y = Rz(90) z = z; R(90, 90, 0) z = Rz(90)(-y) = x
    np.testing.assert_allclose(zxz_to_matrix([90, 90, 0]) @ Z, X, atol=1e-12)


def test_zxz_matches_explicit_product():
    phi, theta, psi = 30.0, 50.0, -70.0

    def rz(a):
        c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])

    def rx(a):
        c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])

    np.testing.assert_allclose(zxz_to_matrix([phi, theta, psi]), rz(phi) @ rx(theta) @ rz(psi),
                               atol=1e-12)


def test_zxz_round_trip_through_matrices():
    rng = np.random.default_rng(1)
    mats = random_rotations(1000, rng)
    np.testing.assert_allclose(zxz_to_matrix(matrix_to_zxz(mats)), mats, atol=1e-9)
    angles = matrix_to_zxz(mats)
    assert angles.shape == (1000, 3)
    assert (angles[:, 1] >= 0).all() and (angles[:, 1] <= 180).all()


def test_relion_matrix_is_inverse_of_scipy_intrinsic_zyz():
    # RELION's Euler_angles2matrix (rot, tilt, psi) written out (euler.cpp); the particle's active
    # rotation is that matrix itself, which equals Rz(rot)Ry(tilt)Rz(psi) transposed.
    rot, tilt, psi = np.radians([20.0, 40.0, 60.0])
    ca, sa, cb, sb, cg, sg = np.cos(rot), np.sin(rot), np.cos(tilt), np.sin(tilt), np.cos(psi), np.sin(psi)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    relion_a = np.array([
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ])
    np.testing.assert_allclose(relion_to_matrix([20, 40, 60]), relion_a, atol=1e-12)
    np.testing.assert_allclose(
        relion_to_matrix([20, 40, 60]),
        Rotation.from_euler("ZYZ", [20, 40, 60], degrees=True).as_matrix().T, atol=1e-12)


def test_relion_rot_only_rotates_clockwise_about_z():
    # RELION's angles are passive: rot = 90 turns the particle's x axis to -y
    np.testing.assert_allclose(relion_to_matrix([90, 0, 0]) @ X, -Y, atol=1e-12)


def test_zxz_relion_conversion_preserves_rotation_for_1000_orientations():
    rng = np.random.default_rng(2)
    mats = random_rotations(1000, rng)
    zxz = matrix_to_zxz(mats)
    relion = zxz_to_relion(zxz)
    np.testing.assert_allclose(relion_to_matrix(relion), mats, atol=1e-9)
    np.testing.assert_allclose(zxz_to_matrix(relion_to_zxz(relion)), mats, atol=1e-9)
    np.testing.assert_allclose(relion_to_matrix(matrix_to_relion(mats)), mats, atol=1e-9)


def test_gimbal_lock_is_handled():
    for angles in ([30, 0, 40], [30, 180, 40]):
        m = zxz_to_matrix(angles)
        np.testing.assert_allclose(zxz_to_matrix(matrix_to_zxz(m)), m, atol=1e-9)
        np.testing.assert_allclose(relion_to_matrix(zxz_to_relion(angles)), m, atol=1e-9)


def test_bad_shape_is_an_error():
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        zxz_to_matrix([1, 2])


def test_random_rotations_are_uniform():
    # the mean of R over the Haar measure is zero; z axis images are uniform on the sphere
    mats = random_rotations(20000, np.random.default_rng(3))
    np.testing.assert_allclose(mats.mean(axis=0), 0, atol=0.02)
    cos_beam = mats[:, 2, 2]
    hist, _ = np.histogram(cos_beam, bins=10, range=(-1, 1))
    assert hist.min() > 0.9 * hist.mean()
